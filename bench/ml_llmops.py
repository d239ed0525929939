"""Step 6 benchmark in one run: ML realtime predict through the API vs the estimator called
directly, then LLMOps ingest throughput and metrics latency over a large operations table.

    .venv/bin/python bench/ml_llmops.py [--quick] [--no-save] [--requests N]
        [--events N] [--ops N] [--postgres URL] [--nats-url URL]

The ML half is bench/ml.py (ml service alone, in-process ASGI client, warm model); the LLMOps
half is bench/llmops.py (durable stream consumer, SQLite or a scratch PostgreSQL database).
Targets: ML API overhead p50 <= 3 ms; LLMOps ingest >= 5,000 events/s; metrics p50 <= 50 ms over
1M operations.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llmops
import ml
from _common import append_results, md_table, today


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    llmops.add_arguments(cli)
    cli.add_argument("--requests", type=int, default=None, help="ML predictions per path")
    cli.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    cli.add_argument("--no-save", action="store_true", help="do not touch docs/benchmarks.md")
    args = cli.parse_args()
    if args.quick:
        args.events, args.ops, args.queries = 2_000, 20_000, 10
    requests = args.requests or (200 if args.quick else 2000)

    work = Path(tempfile.mkdtemp(prefix="faas-bench-ml-"))
    try:
        times = asyncio.run(ml.run(requests, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ml_section = ml.report(times, requests, args.quick)
    print(ml_section, flush=True)

    r = asyncio.run(llmops.run(args))
    table = md_table(["case", "size", "result", "target"], llmops.rows(r))
    print(table)
    if args.no_save:
        return
    command = " ".join(["bench/ml_llmops.py", *sys.argv[1:]])
    title = f"## ML and LLMOps — {today()}{' (--quick)' if args.quick else ''}"
    section = "\n\n".join(
        [
            title,
            f"Command: `{command}`",
            ml_section.split("\n", 1)[1].strip(),  # ML: machine, versions, setup, table
            f"LLMOps: {r['bus']} stream, {r['backend']} database, same process and machine.",
            table,
        ]
    )
    append_results(section)
    print("appended to docs/benchmarks.md")


if __name__ == "__main__":
    main()
