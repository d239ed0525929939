"""The cost of multi-level admission, in one process: a caller counted at the tenant alone
against one counted at all six levels (tenant, team, user, key, model, agent run), on the
memory and the Redis limit store. Each admission is what the gateway does per call: the
caller's levels from cached state (`CallerPolicy.admit`: tenant limits and teams already cached),
one `reserve_scopes`, one `reconcile`. CPU microseconds per admission (process time), in
alternating rounds so drift lands on all alike. `store alone` is `reserve(tenant, caps)` +
`reconcile` without the policy: the only row `--store-only` runs, which an older checkout has
too (run it there with PYTHONPATH=<checkout>/src to compare).

    .venv/bin/python bench/admission_levels.py [--calls N] [--redis URL] [--store-only] [--no-save]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import append_results, environment_lines, md_table, today
from faas.backends.limits import LimitStore, MemoryLimitStore

BIG = 10**9
TABLE = {"models": [{"name": "chat", "deployments": [{"provider": "mock", "model": "m"}]}]}


@dataclass(frozen=True)
class PlainCaps:
    rpm: int | None = BIG
    tpm: int | None = BIG
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = 10**6


class Cached:
    """The two per-tenant caches the policy reads, already warm (as on the hot path)."""

    def __init__(self, limits: Any, teams: Any) -> None:
        self.limits, self.teams = limits, teams

    async def get(self, tenant_id: str) -> Any:
        return self.limits

    async def of_tenant(self, tenant_id: str) -> Any:
        return self.teams


def callers(tenant: str) -> dict[str, tuple[Any, Any]]:
    from faas.services.gateway_service.limits import LevelCaps, TenantLimits
    from faas.services.gateway_service.teams import Team, TenantTeams
    from faas.shared.context import Identity

    caps = LevelCaps(rpm=BIG, tpm=BIG, monthly_budget_usd=10**6)
    limits = TenantLimits(
        rpm=BIG, tpm=BIG, per_user=caps, models={"chat": caps}, monthly_budget_usd=10**6
    )
    team = Team("t1", "ml", caps, None, frozenset())
    teams = TenantTeams({"ml": team}, {})
    plain = TenantLimits(rpm=BIG, tpm=BIG, monthly_budget_usd=10**6)
    every = Identity(
        tenant_id=tenant, user_id="ann", key_id="k1", team="ml", key_rpm=BIG, key_tpm=BIG
    )
    return {
        "tenant only": (Identity(tenant_id=tenant), Cached(plain, TenantTeams())),
        "all six levels": (every, Cached(limits, teams)),
    }


async def store_alone(store: LimitStore, tenant: str, calls: int) -> float:
    caps = PlainCaps()
    started = time.process_time()
    for _ in range(calls):
        reservation = await store.reserve(tenant, caps, 30, 0.0001)
        await store.reconcile(reservation, 25, 0.00008)
    return (time.process_time() - started) / calls * 1e6


async def admissions(store: LimitStore, identity: Any, cached: Any, calls: int) -> float:
    from faas.services.gateway_service import agent_run
    from faas.services.gateway_service.caller_policy import CallerPolicy
    from faas.services.gateway_service.routing import ModelRouter
    from faas.services.gateway_service.routing_table import RoutingTable

    policy = CallerPolicy(ModelRouter(RoutingTable.model_validate(TABLE)), cached, cached)
    if identity.key_id is not None:
        agent_run.begin(f"run-{uuid.uuid4().hex[:8]};budget_usd=1000000")
    else:
        agent_run.begin(None)
    started = time.process_time()
    for _ in range(calls):
        limits = await policy.admit(identity, "chat", "chat")
        reservation = await store.reserve_scopes(limits.scopes(identity.tenant_id), 30, 0.0001)
        await store.reconcile(reservation, 25, 0.00008)
    return (time.process_time() - started) / calls * 1e6


async def measure(
    calls: int, rounds: int, redis_url: str | None, store_only: bool
) -> list[list[str]]:
    stores: dict[str, LimitStore] = {"memory": MemoryLimitStore()}
    client = None
    if redis_url:
        from redis.asyncio import Redis

        from faas.backends.limits.redis import RedisLimitStore

        client = Redis.from_url(redis_url)
        stores["redis"] = RedisLimitStore(client)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    rows = []
    try:
        for store_name, store in stores.items():
            results: dict[str, list[float]] = {"store alone": []}
            for _ in range(rounds):
                results["store alone"].append(await store_alone(store, tenant, calls))
                if store_only:
                    continue
                for name, (identity, cached) in callers(tenant).items():
                    found = await admissions(store, identity, cached, calls)
                    results.setdefault(name, []).append(found)
            base = min(results["store alone"])
            for name, values in results.items():
                best = min(values)
                rows.append([store_name, name, f"{best:.1f}", f"{best / base:.2f}x"])
    finally:
        if client is not None:
            keys = [k async for k in client.scan_iter(match=f"faas-meta:{tenant}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--store-only", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = asyncio.run(measure(args.calls, args.rounds, args.redis or None, args.store_only))
    extra = {
        "Load average (1 min) before/after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
        "Setup": f"in-process, {args.calls} admissions x {args.rounds} rounds, best round",
    }
    section = (
        f"## {today()} — multi-level admission (bench/admission_levels.py)\n\n"
        + "\n".join(environment_lines(extra))
        + "\n\n"
        + md_table(["store", "caller", "CPU us/admission", "vs store alone"], rows)
    )
    sys.stdout.write(section + "\n")
    if not args.no_save:
        append_results(section)


if __name__ == "__main__":
    main()
