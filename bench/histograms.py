"""One histogram record, the OpenTelemetry SDK's against faas's (`faas.integrations.histograms`),
side by side in one process: what a request pays for each of its three records.

    .venv/bin/python bench/histograms.py [--records 200000] [--rounds 7] [--no-save]

Both record the gateway's token-usage measurement: five attributes (operation, model, status,
tenant, token type) in a dict built once, as `UsageMetrics` keeps them, and a value that falls
in the middle of the default buckets. The SDK's is set up as faas's Telemetry had it before
(in-memory reader, exemplars off); faas's through its Telemetry's meter. Rounds alternate the
order; the report is the median of the rounds' microseconds per record and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from statistics import median

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from _common import environment_lines, md_table, publish, today
from faas.integrations.otel import setup_telemetry

ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "chat-default",
    "faas.status": "ok",
    "faas.tenant": "acme",
    "gen_ai.token.type": "input",
}
VALUE = 180


def per_record_us(record: Callable[..., None], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        record(VALUE, ATTRIBUTES)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], exemplar_filter=AlwaysOffExemplarFilter())
    sdk = provider.get_meter("faas").create_histogram("gen_ai.client.token.usage")
    telemetry = setup_telemetry("bench", set_global=False)
    ours = telemetry.meter.create_histogram("gen_ai.client.token.usage")
    timings: dict[str, list[float]] = {"sdk": [], "faas": []}
    loads = []
    for i in range(args.rounds):
        order = [("sdk", sdk.record), ("faas", ours.record)]
        for name, record in order if i % 2 == 0 else order[::-1]:
            timings[name].append(per_record_us(record, args.records))
        loads.append(os.getloadavg()[0])
    ratios = [s / f for s, f in zip(timings["sdk"], timings["faas"], strict=True)]
    rows = [
        [
            label,
            f"{median(timings[key]):.2f} [{min(timings[key]):.2f}, {max(timings[key]):.2f}]",
        ]
        for key, label in (("sdk", "OpenTelemetry SDK histogram"), ("faas", "faas histogram"))
    ]
    lines = [
        f"## One histogram record: the SDK's against faas's ({today()}, `bench/histograms.py`)",
        "",
        *environment_lines(),
        f"- {args.rounds} rounds of {args.records:,} records each, order alternating; CPU time "
        "(process_time) per record, median [lowest, highest] of the rounds; five attributes in "
        "a dict built once",
        "- Load average (1 min) after each round: " + ", ".join(f"{x:.2f}" for x in loads),
        "",
        md_table(["histogram", "CPU-us per record"], rows),
        "",
        f"- SDK / faas: {median(ratios):.1f}x (rounds {min(ratios):.1f}x to {max(ratios):.1f}x)",
    ]
    telemetry.shutdown()
    provider.shutdown()
    publish("\n".join(lines), save=not args.no_save)


if __name__ == "__main__":
    main()
