"""One running platform per backend for the whole fuzz session (starting and seeding it is
the slow part; the requests themselves are cheap)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.platform import RunningPlatform, running_platform

BACKENDS = ["embedded", "servers"]


@pytest.fixture(scope="session", params=BACKENDS)
def fuzz_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    backend = str(request.param)
    with running_platform(backend, tmp_path_factory.mktemp(f"fuzz-{backend}")) as platform:
        yield platform
