"""ML serving benchmark: realtime prediction through the API vs the same estimator called
directly, in one run and one process.

    .venv/bin/python bench/ml.py [--quick] [--no-save] [--requests N]

The platform runs the ml service alone on one runtime (SQLite in a temporary data dir, JWT auth
with a real token), called through httpx's in-process ASGI transport. A logistic regression is
trained (as a job) on a generated 2-feature + 1-category dataset, deployed (warm), then
single-row predictions are timed alternately through `POST /api/v1/ml/models/{name}/predict`,
`POST /v2/models/{name}/infer` and a direct `pipeline.predict` on the loaded pipeline (with the
same row-to-matrix conversion). API overhead = API p50 - direct p50.

Target: API overhead p50 <= 3 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import ROOT, environment_lines, md_table, percentile, publish, today

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.services.ml_service import training
from faas.shared.auth import mint_token
from faas.shared.config import Settings

SECRET = "bench-secret-" + "x" * 40
TARGET_OVERHEAD_MS = 3.0
ROW = {"x1": 0.4, "x2": -1.2, "colour": "red"}


def dataset(n: int = 2000) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    colours = rng.choice(["red", "green", "blue"], size=n)
    return [
        {"x1": float(a), "x2": float(b), "colour": str(c), "label": "yes" if a + b > 0 else "no"}
        for (a, b), c in zip(x, colours, strict=True)
    ]


async def run(requests: int, work: Path) -> dict[str, list[float]]:
    settings = Settings(data_dir=work / "data", jwt_secret=SECRET, log_requests=False)
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-bench", set_global=False))
    service = BUILDERS["ml"](runtime)
    runtime.load_job_modules()
    app = create_service_app([service], runtime)
    token = mint_token(SECRET, tenant_id="bench", user_id="bench", ttl_s=7200)
    headers = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://faas.bench", headers=headers, timeout=60
        ) as client:
            created = await client.post(
                "/api/v1/ml/datasets", json={"name": "bench", "rows": dataset()}
            )
            dataset_id = created.json()["data"]["id"]
            body = {
                "name": "bench",
                "task": "classification",
                "algorithm": "logistic_regression",
                "dataset_id": dataset_id,
                "target": "label",
            }
            location = (await client.post("/api/v1/ml/models/train", json=body)).headers["location"]
            while (job := (await client.get(location)).json()["data"])["status"] not in (
                "succeeded",
                "failed",
            ):
                await asyncio.sleep(0.05)
            assert job["status"] == "succeeded", job
            await client.post("/api/v1/ml/models/bench/deploy", json={"version": 1})
            resolved = await service.registry.resolve("bench", "bench")  # type: ignore[attr-defined]
            pipeline = await service.server.load("bench", resolved)  # type: ignore[attr-defined]
            schema, output = resolved.row.input_schema, resolved.row.output
            predict = {"features": ROW}
            infer = {
                "inputs": [
                    {
                        "name": k,
                        "shape": [1],
                        "datatype": "BYTES" if k == "colour" else "FP64",
                        "data": [v],
                    }
                    for k, v in ROW.items()
                ]
            }
            times: dict[str, list[float]] = {"api": [], "v2": [], "direct": []}
            for i in range(requests + 50):
                t0 = time.perf_counter()
                r1 = await client.post("/api/v1/ml/models/bench/predict", json=predict)
                t1 = time.perf_counter()
                r2 = await client.post("/v2/models/bench/infer", json=infer)
                t2 = time.perf_counter()
                direct = training.predict(pipeline, [ROW], schema, output)
                t3 = time.perf_counter()
                assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
                assert r1.json()["data"]["predictions"] == direct
                if i >= 50:  # warm-up
                    times["api"].append((t1 - t0) * 1000)
                    times["v2"].append((t2 - t1) * 1000)
                    times["direct"].append((t3 - t2) * 1000)
            return times


def report(times: dict[str, list[float]], requests: int, quick: bool) -> str:
    direct50 = percentile(times["direct"], 50)
    rows = []
    for label, key in (
        ("direct `pipeline.predict`", "direct"),
        ("`POST /api/v1/ml/models/{name}/predict`", "api"),
        ("`POST /v2/models/{name}/infer`", "v2"),
    ):
        p50, p99 = percentile(times[key], 50), percentile(times[key], 99)
        overhead = "—" if key == "direct" else f"{p50 - direct50:.2f}"
        rows.append([label, f"{p50:.2f}", f"{p99:.2f}", overhead])
    api_overhead = percentile(times["api"], 50) - direct50
    verdict = "met" if api_overhead <= TARGET_OVERHEAD_MS else "missed"
    setup = {
        "Platform": "ml service alone on one runtime, SQLite in a temp data dir, JWT auth, "
        "httpx in-process ASGI client (no sockets)",
        "Model": "logistic regression (SimpleImputer + StandardScaler + OneHotEncoder pipeline), "
        "2,000 training rows, deployed (warm, LRU-cached)",
        "Requests": f"{requests} single-row predictions per path, interleaved, after 50 warm-up",
    }
    parts = [
        f"## ML serving — {today()}{' (--quick)' if quick else ''}",
        "\n".join(environment_lines(setup)),
        "Single-row prediction latency (ms):\n\n"
        + md_table(["path", "p50", "p99", "overhead p50 vs direct"], rows),
        f"Target: API overhead p50 <= {TARGET_OVERHEAD_MS:.0f} ms — **{verdict}** "
        f"({api_overhead:.2f} ms).",
    ]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--requests", type=int, default=None)
    args = parser.parse_args()
    requests = args.requests or (200 if args.quick else 2000)
    work = Path(tempfile.mkdtemp(prefix="faas-bench-ml-"))
    try:
        times = asyncio.run(run(requests, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = report(times, requests, args.quick)
    print()
    publish(section, save=not args.no_save)


if __name__ == "__main__":
    main()
