"""The gateway benchmark's comparison with the floor: a bare pass-through proxy
(bench/bare_proxy.py) measured beside faas and LiteLLM, and each server's CPU time per request
(user + system seconds of the server process and its children, from /proc through psutil), which
holds steadier than requests/s on a shared machine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from statistics import median

from _common import BENCH_DIR, LOAD_CPU, PYTHON, SERVER_CPU, md_table, pinned

TARGET_CPU_VS_BARE = 2.0  # faas CPU per request within 2x of the bare proxy's
TARGET_CPU_VS_LITELLM = 15.0  # LiteLLM's CPU per request at least 15x faas'

Key = tuple[str, int, int]  # target key, upstream latency ms, concurrency


def bare_command(port: int, upstream: str) -> list[str]:
    script = str(BENCH_DIR / "bare_proxy.py")
    cmd = [PYTHON, script, "--upstream", upstream, "--port", str(port)]
    return pinned(cmd, SERVER_CPU)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


class CpuTally:
    """CPU-ms per answered request of each (target, upstream latency, concurrency) run."""

    def __init__(self) -> None:
        self.samples: dict[Key, list[float]] = {}

    def measure(self, key: Key, pid: int | None, run: Callable[[], int]) -> None:
        """`run` loads the server and returns the requests it answered."""
        if pid is None:
            run()
            return
        before = cpu_seconds(pid)
        answered = run()
        used = cpu_seconds(pid) - before
        self.samples.setdefault(key, []).append(1000 * used / max(1, answered))

    def ms(self, key: Key) -> float | None:
        values = self.samples.get(key)
        return median(values) if values else None


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def floor_table(
    keys: Sequence[str],
    labels: Mapping[str, str],
    cpu: CpuTally,
    rps: Callable[[str], float | None],
    added: Callable[[str, int, str], float | None],
) -> str:
    """Per-request cost at the 0 ms upstream: each config against the bare proxy and LiteLLM."""
    bare = cpu.ms(("bare", 0, 32))
    lite = cpu.ms(("litellm", 0, 32))
    lite_p99 = added("litellm", 32, "p99_ms")
    rows = []
    for key in keys:
        mine = cpu.ms((key, 0, 32))
        p99 = added(key, 32, "p99_ms")
        rows.append(
            [
                labels[key],
                _fmt(rps(key), ",.0f"),
                _fmt(mine, ".3f"),
                _fmt(cpu.ms((key, 0, 1)), ".3f"),
                "" if mine is None or not bare else f"{mine / bare:.2f}x",
                "" if mine is None or not lite else f"{lite / mine:.1f}x",
                _fmt(added(key, 1, "p50_ms"), ".2f"),
                _fmt(added(key, 32, "p50_ms"), ".2f"),
                _fmt(p99, ".2f"),
                "" if p99 is None or not lite_p99 else f"{p99 / lite_p99:.2f}x",
            ]
        )
    header = [
        "Config (0 ms upstream)",
        "req/s c=32",
        "server CPU-ms/req c=32",
        "CPU-ms/req c=1",
        "CPU vs bare proxy",
        "LiteLLM CPU / this",
        "added p50 ms c=1",
        "added p50 ms c=32",
        "added p99 ms c=32",
        "added p99 vs LiteLLM",
    ]
    goals = (
        f"Goals (faas): CPU per request ≤ {TARGET_CPU_VS_BARE:.0f}x the bare proxy's and ≤ "
        f"1/{TARGET_CPU_VS_LITELLM:.0f} of LiteLLM's; added p50 at c=1 ≤ 0.5 ms; added p99 at "
        "c=32 ≤ 0.10x LiteLLM's. CPU-ms: the server process's user+system time over the latency "
        "rounds, per answered request (median of the rounds)."
    )
    return md_table(header, rows) + "\n\n" + goals


__all__ = ["LOAD_CPU", "CpuTally", "bare_command", "cpu_seconds", "floor_table"]
