"""An upload cancelled while its files are being staged (the client left, the server stops)
leaves no file behind: the staging thread is let finish before the request's files go."""

from __future__ import annotations

import asyncio
import io
import time
import types
from pathlib import Path
from typing import Any

import pytest

import faas.documents  # noqa: F401  (imported now: its first import would outlast the test)
from faas.services.ingestion_service import intake
from faas.shared.context import Identity


async def test_a_cancelled_upload_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = intake._screen

    def slow_screen(path: Path, **kwargs: Any) -> str:
        fmt = screen(path, **kwargs)
        time.sleep(0.1)  # like a PDF's page tree being read
        return fmt

    monkeypatch.setattr(intake, "_screen", slow_screen)
    settings: Any = types.SimpleNamespace(max_upload_bytes=10**6)
    jobs: Any = None
    db: Any = None
    taker = intake.Intake(settings, db=db, jobs=jobs, root=tmp_path)
    uploads = [
        intake.Upload(f"f{i}.txt", "text/plain", io.BytesIO(b"a plain text file %d\n" % i))
        for i in range(5)
    ]
    options = intake.Options("c", {}, auto_ingest=False, redact_pii=False)
    task = asyncio.create_task(taker.upload(Identity(tenant_id="acme"), uploads, options))
    await asyncio.sleep(0.05)  # the first file is being screened
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.6)  # a thread left running would have written the rest by now
    assert list((tmp_path / "acme").iterdir()) == []
