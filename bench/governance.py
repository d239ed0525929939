"""Step 13 benchmark: gateway overhead with API keys and GenAI tracing on, against the code
before Step 13, side by side in one run.

    .venv/bin/python bench/governance.py [--before REV] [--quick] [--no-save]

Five `faas serve gateway` servers, measured in interleaved rounds (bench/refactor.py's method:
each round runs every server once, the order alternating; the cells are the rounds' medians):

  before             REV (default b374c2b: API keys in, none of Step 13's budgets, model
                     access, tags, alerts or GenAI spans) with a JWT, no trace exporter
  before + otel      the same with OTEL_TRACES_EXPORTER=otlp to a local sink: the HTTP server
                     spans faas already wrote before Step 13
  after, jwt         this checkout with the same JWT as `before`
  after + key        this checkout, called with an `fk-` API key of a team, carrying a key
                     budget, rpm and tpm and the team's caps (every admission reserves against
                     tenant, team, user and key), tags in `x-faas-tags`; no exporter
  after + key + otel the same with the OTLP exporter on: the HTTP spans plus the GenAI span of
                     every model call

"Within 10 %" (issue 17) compares `after + key + otel` with `before + otel` (same exporter,
same sink) and `after + key` with `before`. The sink answers 200 to every OTLP POST and counts
what it received, so the exporter really serialises and sends every span.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from _common import (
    LOAD_CPU,
    PYTHON,
    ROOT,
    SERVER_CPU,
    environment_lines,
    free_port,
    have_taskset,
    md_table,
    pinned,
    publish,
    server,
    today,
    wait_for_quiet,
)
from refactor import (
    HIGH_LIMIT,
    TENANT,
    UPSTREAM_KEY,
    Errors,
    Mode,
    Samples,
    Target,
    Tree,
    answer,
    cell,
    check_import,
    divide,
    gateway_step,
    interleave,
    start_mock,
    warm_up_gateways,
    worktree,
)

DEFAULT_BEFORE = "b374c2b"
BEFORE, BEFORE_OTEL, AFTER_JWT = "before", "before + otel", "after, jwt"
AFTER, AFTER_OTEL = "after + key", "after + key + otel"
LABELS = [BEFORE, BEFORE_OTEL, AFTER_JWT, AFTER, AFTER_OTEL]
PAIRS = [(AFTER_JWT, BEFORE), (AFTER, BEFORE), (AFTER_OTEL, BEFORE_OTEL)]


class OtlpSink:
    """An HTTP server on its own thread that answers 200 to every POST and counts them."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts = 0
        self.bytes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def __enter__(self) -> OtlpSink:
        ready = threading.Event()
        self._loop.call_soon(ready.set)
        self._thread.start()
        ready.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.posts += 1
                self.bytes += length
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
                    b"content-length: 0\r\n\r\n"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def routing_yaml(mock: str) -> str:
    return (
        "models:\n  - name: mock\n    kind: chat\n    deployments:\n      - provider: openai\n"
        f"        model: mock-model\n        api_base: {mock}/v1\n        api_key: {UPSTREAM_KEY}\n"
        "        price: {input_per_1k: 0.0001, output_per_1k: 0.0002}\n"
    )


def admin_token(env: dict[str, str]) -> str:
    out = subprocess.run(
        [PYTHON, "-m", "faas", "token", "--tenant", TENANT, "--user", "root", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def team_key(base: str, env: dict[str, str]) -> str:
    """A team with caps, and an `fk-` key of that team with its own budget and rates."""
    admin = {"Authorization": f"Bearer {admin_token(env)}"}
    caps = {"rpm": int(HIGH_LIMIT), "tpm": int(HIGH_LIMIT), "monthly_budget_usd": 1e6}
    team = {"name": "search", "members": ["bench-user"], "limits": caps}
    answer(httpx.post(f"{base}/api/v1/teams", json=team, headers=admin), "team")
    key = {
        "name": "bench",
        "user": "bench-user",
        "team": "search",
        "budget_usd": 1e6,
        "rpm": int(HIGH_LIMIT),
        "tpm": int(HIGH_LIMIT),
    }
    created = answer(httpx.post(f"{base}/api/v1/keys", json=key, headers=admin), "key")
    return str(created["data"]["key"])


def start(
    stack: ExitStack, tree: Tree, label: str, work: Path, extra: dict[str, str], key: bool
) -> Target:
    port = free_port()
    env = tree.env(work / f"data-{label.replace(' ', '')}", **extra)
    cmd = pinned([PYTHON, "-m", "faas", "serve", "gateway", "--port", str(port)], SERVER_CPU)
    base = f"http://127.0.0.1:{port}"
    log = work / f"gateway-{label.replace(' ', '')}.log"
    proc = stack.enter_context(server(cmd, env, f"{base}/readyz", log, cwd=work))
    if key:
        headers = {"Authorization": f"Bearer {team_key(base, env)}", "x-faas-tags": "env=bench"}
    else:
        token = subprocess.run(
            [PYTHON, "-m", "faas", "token", "--tenant", TENANT, "--user", "bench-user"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
    headers["Content-Type"] = "application/json"
    return Target(label, base, headers, proc.pid)


def gateway(trees: dict[str, Tree], work: Path, mode: Mode, sink: OtlpSink) -> Samples:
    errors: Errors = Counter()
    mock = f"http://127.0.0.1:{free_port()}"
    (work / "models.yaml").write_text(routing_yaml(mock))
    common = {
        "FAAS_GATEWAY_MODELS": str(work / "models.yaml"),
        "FAAS_GATEWAY_DEFAULT_RPM": HIGH_LIMIT,
        "FAAS_GATEWAY_DEFAULT_TPM": HIGH_LIMIT,
    }
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.endpoint,
    }
    step = gateway_step(mock, mode, errors)
    with ExitStack() as stack:
        start_mock(stack, mock, work)
        targets = [
            start(stack, trees["before"], BEFORE, work, common, key=False),
            start(stack, trees["before"], BEFORE_OTEL, work, common | otel, key=False),
            start(stack, trees["after"], AFTER_JWT, work, common, key=False),
            start(stack, trees["after"], AFTER, work, common, key=True),
            start(stack, trees["after"], AFTER_OTEL, work, common | otel, key=True),
        ]
        warm_up_gateways(targets, mode, errors)
        samples = interleave("gateway", targets, mode, step)
        time.sleep(6)  # the batch span processors' last export (5 s schedule)
    samples["failed requests"] = {label: [float(n)] for label, n in errors.items()}
    return samples


def table(samples: Samples) -> str:
    labels = LABELS
    header = ["Measure", *labels, *(f"{a} / {b}" for a, b in PAIRS)]
    rows = []
    for measure, by_label in samples.items():
        if measure == "failed requests":
            rows.append([measure, *(str(int(by_label.get(x, [0])[0])) for x in labels)])
            continue
        medians = {x: statistics.median(by_label[x]) for x in labels}
        ratios = []
        for a, b in PAIRS:
            pairs = [divide(x, y) for x, y in zip(by_label[a], by_label[b], strict=True)]
            ratios.append(
                f"{divide(medians[a], medians[b]):.3f} ({min(pairs):.2f} to {max(pairs):.2f})"
            )
        rows.append([measure, *(cell(by_label[x]) for x in labels), *ratios])
    return md_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of 'before'")
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a load below")
    parser.add_argument("--wait-minutes", type=float, default=0, help="wait for quiet first")
    args = parser.parse_args()
    mode = Mode.of(args.quick)
    if args.wait_minutes:
        wait_for_quiet(args.max_load, args.wait_minutes * 60)
    if have_taskset():
        os.sched_setaffinity(0, {LOAD_CPU})
    work = Path(tempfile.mkdtemp(prefix="faas-bench-governance-"))
    load_start, started = os.getloadavg(), time.monotonic()
    print(f"work dir {work}; load average {load_start[0]:.2f}")
    with worktree(args.before) as before, OtlpSink() as sink:
        secret = secrets.token_urlsafe(48)
        trees = {
            "before": Tree("before", before / "src", secret),
            "after": Tree("after", ROOT / "src", secret),
        }
        for tree in trees.values():
            check_import(tree, work)
        samples = gateway(trees, work, mode, sink)
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        rev = subprocess.run(
            ["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        exported = f"{sink.posts} OTLP posts, {sink.bytes / 1e6:.1f} MB received by the sink"
    load_end = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    facts = {
        "Before": f"`{args.before}` ({rev}) in a detached git worktree",
        "After": f"this checkout, HEAD {head}",
        "Spans": exported,
        "Load average (1 min)": f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end",
        "Run took": f"{(time.monotonic() - started) / 60:.1f} min",
        "Method": f"{mode.rounds} interleaved rounds, {mode.load_s:.0f} s at c=32 and "
        f"{mode.latency_s:.0f} s at c=1 per server per round; servers on core {SERVER_CPU}, "
        f"load, mock upstream and OTLP sink on core {LOAD_CPU}; cells: median (lowest to "
        "highest); ratios: of the medians (range of the per-round ratios)",
    }
    text = "\n\n".join(
        [
            f"## Step 13: gateway with API keys and GenAI tracing on — {today()}",
            "`bench/governance.py`: the gateway before Step 13 and after it, with a team's `fk-` "
            "key (team, user and key caps reserved on every call, tags) and with the OTLP "
            "exporter on, side by side. Goal (issue 17): within 10 % of before.",
            table(samples),
            "\n".join(environment_lines(facts)),
        ]
    )
    print()
    publish(text + "\n", save=not args.no_save)


if __name__ == "__main__":
    main()
