"""Tenant isolation, swept over the OpenAPI of `faas up`: tenant A owns one of everything;
tenant B — as a user and as a tenant admin — calls every operation with A's ids and names in
the path, with `tenant_id=A` in the query and the body, and with `X-Tenant-ID: A`.

Nothing B gets back may carry A's marker, and nothing A sees may change. The operations come
from the OpenAPI, so a new endpoint is swept without editing this file; a path parameter the
seed does not know is filled with each of A's ids in turn.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fuzz.platform import OTHER, OWNER, RunningPlatform, Seeded, headers, seed

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

MUTATING = ("post", "put", "patch", "delete")
# Not tenant data: health, metrics and the API description are the same for every caller.
PUBLIC = ("/livez", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")


def operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in openapi["paths"].items():
        if path.startswith(PUBLIC):
            continue
        for method, operation in item.items():
            yield method, path, operation


def path_params(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]


def concrete_paths(path: str, operation: dict[str, Any], seeded: Seeded) -> list[str]:
    """`path` with A's value for each parameter; every combination of A's ids where the seed
    has no value for a parameter."""
    names = path_params(operation)
    choices = [
        [known] if (known := seeded.value_for(path, name)) else seeded.all_values()
        for name in names
    ]
    result = []
    for values in itertools.product(*choices):
        concrete = path
        for name, value in zip(names, values, strict=True):
            concrete = concrete.replace("{" + name + "}", value)
        result.append(concrete)
    return result


def body_for(operation: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON object body naming tenant A, for operations that take a JSON body."""
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return {"tenant_id": OWNER}


def owner_view(client: httpx.Client, openapi: dict[str, Any], seeded: Seeded) -> dict[str, Any]:
    """What A sees of its own data through every read-only operation whose path A's seed can
    fill: the status, and whether A's markers are there (counters and clocks in the bodies
    change by themselves, the markers only when someone changes A's data)."""
    view: dict[str, Any] = {}
    auth = headers(OWNER)
    for method, path, operation in operations(openapi):
        if method != "get":
            continue
        names = path_params(operation)
        values = [seeded.value_for(path, n) for n in names]
        if any(v is None for v in values):
            continue
        concrete = path
        for name, value in zip(names, values, strict=True):
            concrete = concrete.replace("{" + name + "}", str(value))
        response = client.get(concrete, headers=auth)
        text = response.text.lower()
        view[concrete] = (
            response.status_code,
            seeded.marker.lower() in text,
            seeded.number in text,
        )
    return view


def settled_owner_view(
    client: httpx.Client, openapi: dict[str, Any], seeded: Seeded
) -> dict[str, Any]:
    """A's view once background work (jobs, usage events) has stopped changing it."""
    deadline = time.monotonic() + 60
    previous = owner_view(client, openapi, seeded)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        current = owner_view(client, openapi, seeded)
        if current == previous:
            return current
        previous = current
    raise AssertionError("tenant A's view kept changing with nobody calling")


def test_no_tenant_reaches_another(fuzz_platform: RunningPlatform) -> None:
    openapi = fuzz_platform.openapi
    with httpx.Client(base_url=fuzz_platform.url, timeout=60) as client:
        seeded = seed(client)
        marker = seeded.marker.lower()
        before = settled_owner_view(client, openapi, seeded)
        assert sum(v[1] for v in before.values()) >= 8, f"the seed is not visible: {before}"
        assert any(v[2] for v in before.values()), "A's limits are not visible"

        leaks: list[str] = []
        swept = 0
        for method, path, operation in operations(openapi):
            for concrete in concrete_paths(path, operation, seeded):
                for admin in (False, True):
                    auth = headers(OTHER, user="bob", admin=admin)
                    attempts = [
                        ({}, {}),
                        ({"tenant_id": OWNER}, {}),
                        ({}, {"X-Tenant-ID": OWNER}),
                    ]
                    for params, extra in attempts:
                        response = client.request(
                            method,
                            concrete,
                            params=params,
                            headers=auth | extra,
                            json=body_for(operation) if method in MUTATING else None,
                        )
                        swept += 1
                        if marker in response.text.lower():
                            who = "tenant admin" if admin else "user"
                            leaks.append(
                                f"{method.upper()} {concrete} {params or ''}{extra or ''} as "
                                f"{who} of {OTHER}: {response.status_code} {response.text[:200]}"
                            )
        assert not leaks, "\n".join(leaks)
        assert swept > 300  # the sweep reached the API, not an empty schema

        after = settled_owner_view(client, openapi, seeded)
        changed = {k: (before[k], after.get(k)) for k in before if after.get(k) != before[k]}
        assert not changed, f"tenant {OTHER} changed what {OWNER} sees: {changed}"
