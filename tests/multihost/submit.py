"""Submit jobs from the host this runs on, as a service does (one `jobs` row and one JetStream
message each), and print their ids as JSON:

    python -m tests.multihost.submit KIND COUNT PAYLOAD_JSON
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from faas.runtime import Runtime
from faas.shared.config import load_settings
from faas.shared.context import Identity

SUBMITTER = Identity(tenant_id="multihost", user_id="mh")


async def submit(kind: str, count: int, payload: dict[str, object]) -> list[str]:
    runtime = Runtime.build(load_settings(run_worker=False, services=[]))
    runtime.load_job_modules()
    await runtime.start(run_worker=False)
    try:
        views = [await runtime.jobs.submit(SUBMITTER, kind, payload) for _ in range(count)]
    finally:
        await runtime.close()
    return [view.job_id for view in views]


def main() -> None:
    kind, count, payload = sys.argv[1], int(sys.argv[2]), orjson.loads(sys.argv[3])
    print(orjson.dumps(asyncio.run(submit(kind, count, payload))).decode())


if __name__ == "__main__":
    main()
