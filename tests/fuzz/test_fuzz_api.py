"""Schemathesis over the OpenAPI of `faas up` (every service), on the embedded defaults and on
PostgreSQL + pgvector, Redis and NATS: no input may produce a 5xx, and every error under
`/api/` is an `ErrorResponse`.

Seeded and bounded: `derandomize` makes the examples the same every run, FAAS_FUZZ_EXAMPLES
sets how many per operation (the default keeps `make test` short; a nightly run sets it high).
Half the examples of an operation whose path names a resource get the id of a resource that
exists (seeded by tests/fuzz/platform.py), so the fuzzing reaches past the 404.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from faas.app import build_app
from faas.shared.config import Settings
from tests.conftest import TEST_SECRET
from tests.fuzz.platform import OWNER, RunningPlatform, headers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("FAAS_FUZZ_EXAMPLES", "12"))


def _operations() -> list[Any]:
    """Every operation of `faas up`'s OpenAPI, read from an app built in process (building it
    starts nothing)."""
    with tempfile.TemporaryDirectory() as data_dir:
        app = build_app(Settings(data_dir=data_dir, jwt_secret=TEST_SECRET))
        spec = app.openapi()
    loaded = schemathesis.openapi.from_dict(spec)
    return [result.ok() for result in loaded.get_all_operations()]


OPERATIONS = _operations()


def _pin_existing_ids(case: Any, platform: RunningPlatform) -> None:
    """Every other example of an operation uses the ids of resources that exist."""
    if not case.path_parameters:
        return
    if zlib.crc32(repr(sorted(case.path_parameters.items())).encode()) % 2:
        return
    for name in list(case.path_parameters):
        value = platform.seeded.value_for(case.path, name)
        if value is not None:
            case.path_parameters[name] = value


MALFORMED_HTTP = "Invalid HTTP request received."


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_input_makes_a_server_error(operation: Any, fuzz_platform: RunningPlatform) -> None:
    auth = headers(OWNER, admin=True)
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    with requests.Session() as session:

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            _check(case, fuzz_platform, session, auth)

        fuzz()


def _check(
    case: Any, platform: RunningPlatform, session: requests.Session, auth: dict[str, str]
) -> None:
    _pin_existing_ids(case, platform)
    response = case.call(base_url=platform.url, session=session, headers=auth, timeout=60)
    where = f"{case.method} {case.formatted_path} ({platform.backend})"
    assert response.status_code < 500, (
        f"{where} answered {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}"
    )
    if response.text == MALFORMED_HTTP and response.status_code == 400:
        # Negative generation can send invalid HTTP (an empty Content-Length header): uvicorn's
        # parser refuses it with a plain 400 before any application code runs.
        return
    if response.status_code >= 400 and case.path.startswith("/api/"):
        assert "json" in str(response.headers.get("content-type")), (
            f"{where} answered {response.status_code} {response.text[:200]!r}\n"
            f"reproduce: {case.as_curl_command()}"
        )
        body = response.json()
        assert body["success"] is False and body["error"]["code"], (where, body)
