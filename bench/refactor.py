"""Step 9 refactor benchmark: the code before the refactor against the working tree, side by side.

    .venv/bin/python bench/refactor.py [--before REV] [--quick] [--no-save] [--rounds N]
        [--only gateway,cache,rag]

The "before" servers run from a detached git worktree of REV (default d05e4a8, the last commit
before Step 9), the "after" servers from this checkout; both with the same .venv python, told
apart only by PYTHONPATH (checked once per tree). Each measure alternates before and after for
N rounds (before-after, then after-before, ...) and reports the median of the rounds (lowest
and highest in brackets) and the range of the rounds' paired after/before ratios. Servers are
pinned to core 0; the load generator, the mock upstream and this script share core 1.

  gateway   `faas serve gateway` → mock upstream (0 ms): non-streamed chat completions, req/s
            and server CPU-ms per request at concurrency 32, added p50 at concurrency 1 (faas
            p50 minus the upstream-direct p50 measured just before it)
  cache     `faas serve cache`: GET of one stored key at concurrency 32, req/s and CPU-ms
  rag       `faas up` with FAAS_SERVICES=gateway,rag (SQLite, hash embeddings) holding ~2,000
            chunks: hybrid search at concurrency 8, p50, req/s and CPU-ms; indexing docs/s
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from _common import (
    LOAD_CPU,
    PYTHON,
    ROOT,
    SERVER_CPU,
    LoadResult,
    clean_env,
    environment_lines,
    free_port,
    have_taskset,
    load_tool,
    md_table,
    mint_token,
    pinned,
    publish,
    run_load,
    server,
    today,
    wait_for_quiet,
)

DEFAULT_BEFORE = "d05e4a8"
TENANT = "bench"
UPSTREAM_KEY = "sk-mock-upstream"
REPLY = "Hello from the mock upstream."
HIGH_LIMIT = "1000000000"  # tenant limits checked and counted, never reached
CHAT_BODY = orjson.dumps(
    {"model": "mock", "messages": [{"role": "user", "content": "Say hello."}], "temperature": 0.7}
)
CACHE_KEY = "bench-key"
COLLECTION = "bench"
VOCAB = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrstxz"]
SEARCH = {"query_text": " ".join(VOCAB[7::211]), "mode": "hybrid", "top_k": 10}
SEARCH_BODY = orjson.dumps(SEARCH | {"collection": COLLECTION})
DOCUMENT_OPTIONS = {"collection": COLLECTION, "chunk_size": 80, "chunk_overlap": 0}

Samples = dict[str, dict[str, list[float]]]  # measure -> tree label -> one value per round
Errors = Counter[str]  # tree label -> failed requests


@dataclass(frozen=True, slots=True)
class Mode:
    rounds: int
    load_s: float  # each concurrency-32 / concurrency-8 load
    latency_s: float  # each concurrency-1 load
    warmup_s: float
    docs: int

    @staticmethod
    def of(quick: bool) -> Mode:
        return Mode(2, 1.0, 1.0, 1.0, 20) if quick else Mode(7, 5.0, 3.0, 3.0, 200)


@dataclass(frozen=True, slots=True)
class Tree:
    label: str
    src: Path
    secret: str  # FAAS_JWT_SECRET of its servers and tokens

    def env(self, data_dir: Path, **extra: str) -> dict[str, str]:
        paths = {"PYTHONPATH": str(self.src), "FAAS_DATA_DIR": str(data_dir)}
        return clean_env(**paths, FAAS_JWT_SECRET=self.secret, **extra)


@dataclass(frozen=True, slots=True)
class Target:
    tree: str
    base: str
    headers: dict[str, str]
    pid: int


# -- trees and processes -----------------------------------------------------------------------


def git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached worktree of `rev` in a temp dir, removed again at the end."""
    holder = Path(tempfile.mkdtemp(prefix="faas-bench-before-"))
    path = holder / "tree"
    git("worktree", "add", "--detach", str(path), rev)
    try:
        yield path
    finally:
        with suppress(subprocess.CalledProcessError):
            git("worktree", "remove", "--force", str(path))
        shutil.rmtree(holder, ignore_errors=True)


def check_import(tree: Tree, cwd: Path) -> None:
    """Fail loudly unless `import faas` with this tree's environment loads this tree's code."""
    code = "import faas; print(faas.__file__)"
    env = tree.env(cwd / "import-check")
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    loaded = Path(out.stdout.strip()).resolve()
    if not loaded.is_relative_to(tree.src.resolve()):
        raise RuntimeError(f"{tree.label}: PYTHONPATH={tree.src} imports faas from {loaded}")
    print(f"  {tree.label}: faas from {loaded}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def start_servers(
    stack: ExitStack,
    trees: Sequence[Tree],
    work: Path,
    command: Sequence[str],
    extra: dict[str, str],
) -> list[Target]:
    """One server per tree (`python -m faas <command> --port P`), each with its own data dir,
    and a bearer token minted by that tree's own `faas token`."""
    targets = []
    for tree in trees:
        port = free_port()
        data = work / f"{command[-1]}-{tree.label}"
        env = tree.env(data, **extra)
        cmd = pinned([PYTHON, "-m", "faas", *command, "--port", str(port)], SERVER_CPU)
        base = f"http://127.0.0.1:{port}"
        log = work / f"{command[-1]}-{tree.label}.log"
        proc = stack.enter_context(server(cmd, env, f"{base}/readyz", log, cwd=work))
        token = mint_token(env, TENANT)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        targets.append(Target(tree.label, base, headers, proc.pid))
    return targets


def measured(
    target: Target,
    path: str,
    connections: int,
    duration_s: float,
    errors: Errors,
    body: bytes | None = None,
) -> tuple[LoadResult, float]:
    """A load on `target`, and the server's CPU-milliseconds per answered request; failed
    requests are counted in `errors`."""
    before = cpu_seconds(target.pid)
    result = run_load(
        target.base + path,
        connections=connections,
        duration_s=duration_s,
        headers=target.headers,
        body=body,
        timeout_s=10,
    )
    used = cpu_seconds(target.pid) - before
    errors[target.tree] += result.errors
    return result, 1000 * used / max(1, result.requests)


def in_order(targets: Sequence[Target], i: int) -> list[Target]:
    """Before-after in even rounds, after-before in odd ones: drift falls on both alike."""
    return list(targets) if i % 2 == 0 else list(reversed(targets))


Step = Callable[[Target], dict[str, float]]


def interleave(name: str, targets: Sequence[Target], mode: Mode, step: Step) -> Samples:
    """`step` on every target per round, alternating the order; its values per measure."""
    samples: Samples = defaultdict(lambda: defaultdict(list))
    for i in range(mode.rounds):
        for target in in_order(targets, i):
            for measure, value in step(target).items():
                samples[measure][target.tree].append(value)
        print(f"  {name} round {i + 1}/{mode.rounds} done")
    return samples


def answer(response: httpx.Response, what: str) -> Any:
    """The JSON body of a successful response; raises with the body otherwise."""
    if response.status_code >= 300:
        raise RuntimeError(f"{what}: {response.status_code} {response.text[:400]}")
    return response.json()


# -- the three measures ------------------------------------------------------------------------


def routing_yaml(mock: str) -> str:
    return (
        "models:\n  - name: mock\n    kind: chat\n    deployments:\n      - provider: openai\n"
        f"        model: mock-model\n        api_base: {mock}/v1\n        api_key: {UPSTREAM_KEY}\n"
    )


CHAT = "/v1/chat/completions"


def gateway_step(mock: str, mode: Mode, errors: Errors) -> Step:
    """One round on a gateway: c=32 load (req/s, CPU), then added p50 at c=1 against the
    upstream-direct p50 measured just before it."""
    chat = CHAT
    upstream = {"Authorization": f"Bearer {UPSTREAM_KEY}"}

    def step(target: Target) -> dict[str, float]:
        load, cpu_ms = measured(target, chat, 32, mode.load_s, errors, CHAT_BODY)
        direct = run_load(
            mock + chat, connections=1, duration_s=mode.latency_s, headers=upstream, body=CHAT_BODY
        )
        single, _ = measured(target, chat, 1, mode.latency_s, errors, CHAT_BODY)
        return {
            "gateway chat req/s (c=32)": load.rps,
            "gateway server CPU-ms per request (c=32)": cpu_ms,
            "gateway added latency p50 ms (c=1)": single.p50_ms - direct.p50_ms,
        }

    return step


def warm_up_gateways(targets: Sequence[Target], mode: Mode, errors: Errors) -> None:
    """Check each gateway answers the mock's reply, then warm it up at c=32."""
    for target in targets:
        got = httpx.post(target.base + CHAT, content=CHAT_BODY, headers=target.headers)
        content = answer(got, f"{target.tree} chat")["choices"][0]["message"]["content"]
        if content != REPLY:
            raise RuntimeError(f"{target.tree}: unexpected reply {content!r}")
        measured(target, CHAT, 32, mode.warmup_s, errors, CHAT_BODY)


def start_mock(stack: ExitStack, mock: str, work: Path) -> None:
    """The mock upstream at `mock`, on the load core, until `stack` closes."""
    cmd = [PYTHON, "-m", "tests.support.mock_upstream", "--port", mock.rsplit(":", 1)[1]]
    env = clean_env(PYTHONPATH=str(ROOT))
    ready = f"{mock}/v1/models"
    stack.enter_context(server(pinned(cmd, LOAD_CPU), env, ready, work / "mock.log", cwd=ROOT))


def gateway(trees: Sequence[Tree], work: Path, mode: Mode, errors: Errors) -> Samples:
    mock = f"http://127.0.0.1:{free_port()}"
    (work / "models.yaml").write_text(routing_yaml(mock))
    extra = {"FAAS_GATEWAY_MODELS": str(work / "models.yaml")}
    extra |= {"FAAS_GATEWAY_DEFAULT_RPM": HIGH_LIMIT, "FAAS_GATEWAY_DEFAULT_TPM": HIGH_LIMIT}
    step = gateway_step(mock, mode, errors)
    with ExitStack() as stack:
        start_mock(stack, mock, work)
        targets = start_servers(stack, trees, work, ["serve", "gateway"], extra)
        warm_up_gateways(targets, mode, errors)
        return interleave("gateway", targets, mode, step)


def cache(trees: Sequence[Tree], work: Path, mode: Mode, errors: Errors) -> Samples:
    path = f"/api/v1/cache/{CACHE_KEY}"

    def step(target: Target) -> dict[str, float]:
        load, cpu_ms = measured(target, path, 32, mode.load_s, errors)
        return {"cache GET req/s (c=32)": load.rps, "cache GET server CPU-ms per request": cpu_ms}

    with ExitStack() as stack:
        targets = start_servers(stack, trees, work, ["serve", "cache"], {})
        for target in targets:
            value = {"text": "hello", "n": list(range(10))}
            body = {"key": CACHE_KEY, "value": value}
            put = httpx.post(target.base + "/api/v1/cache", json=body, headers=target.headers)
            answer(put, f"{target.tree} cache PUT")
            got = httpx.get(target.base + path, headers=target.headers)
            if answer(got, f"{target.tree} cache GET")["data"]["found"] is not True:
                raise RuntimeError(f"{target.tree}: the stored key is not found")
            measured(target, path, 32, mode.warmup_s, errors)
        return interleave("cache", targets, mode, step)


def document(rng: random.Random) -> str:
    """Ten paragraphs of ~45 words, about one chunk each at chunk_size 80."""
    paragraphs = [" ".join(rng.choices(VOCAB, k=rng.randint(40, 50))) for _ in range(10)]
    return "\n\n".join(p.capitalize() + "." for p in paragraphs)


def index_documents(targets: Sequence[Target], mode: Mode) -> Samples:
    """The same documents into every target, one request at a time, alternating the order;
    docs/s per batch of documents (one batch per round), and the chunks indexed."""
    rng = random.Random(7)
    docs = [document(rng) for _ in range(mode.docs)]
    size = -(-len(docs) // mode.rounds)
    samples: Samples = defaultdict(lambda: defaultdict(list))
    chunks: dict[str, float] = defaultdict(float)
    with httpx.Client(timeout=60) as http:
        for first in range(0, len(docs), size):
            took: dict[str, float] = defaultdict(float)
            for n, content in enumerate(docs[first : first + size], start=first):
                body = {"title": f"doc {n}", "content": content, **DOCUMENT_OPTIONS}
                for target in in_order(targets, n):
                    url = target.base + "/api/v1/rag/documents"
                    began = time.perf_counter()
                    got = http.post(url, json=body, headers=target.headers)
                    took[target.tree] += time.perf_counter() - began
                    chunks[target.tree] += answer(got, f"{target.tree} index")["data"]["chunks"]
            batch = len(docs[first : first + size])
            for tree, seconds in took.items():
                samples["RAG indexing docs/s (one at a time)"][tree].append(batch / seconds)
    samples["RAG chunks indexed"] = {tree: [n] for tree, n in chunks.items()}
    return samples


def rag(trees: Sequence[Tree], work: Path, mode: Mode, errors: Errors) -> Samples:
    extra = {"FAAS_SERVICES": "gateway,rag"}
    path = "/api/v1/rag/search"

    def step(target: Target) -> dict[str, float]:
        load, cpu_ms = measured(target, path, 8, mode.load_s, errors, SEARCH_BODY)
        return {
            "RAG hybrid search p50 ms (c=8)": load.p50_ms,
            "RAG hybrid search req/s (c=8)": load.rps,
            "RAG search server CPU-ms per request": cpu_ms,
        }

    with ExitStack() as stack:
        targets = start_servers(stack, trees, work, ["up"], extra)
        for target in targets:
            url = target.base + "/api/v1/rag/collections"
            got = httpx.post(url, json={"name": COLLECTION}, headers=target.headers)
            answer(got, f"{target.tree} collection")
        indexed = index_documents(targets, mode)
        for target in targets:
            got = httpx.post(target.base + path, content=SEARCH_BODY, headers=target.headers)
            if not answer(got, f"{target.tree} search")["data"]["results"]:
                raise RuntimeError(f"{target.tree}: the search found nothing")
            measured(target, path, 8, mode.warmup_s, errors, SEARCH_BODY)
        return indexed | interleave("rag", targets, mode, step)


# -- report and main ---------------------------------------------------------------------------


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def cell(values: Sequence[float]) -> str:
    """The median, and with several rounds the lowest and highest in brackets."""
    mid = number(statistics.median(values))
    if len(values) < 2:
        return mid
    return f"{mid} ({number(min(values))} to {number(max(values))})"


def divide(a: float, b: float) -> float:
    return a / b if b else float("nan")


def table(samples: Samples, errors: Errors) -> str:
    """after/before of the medians, and of each round's pair (measured back to back, so
    drift of the machine mostly cancels: all pairs on one side of 1 is a real change)."""
    rows = []
    for measure, by_tree in samples.items():
        before, after = by_tree["before"], by_tree["after"]
        ratio = divide(statistics.median(after), statistics.median(before))
        pairs = [divide(a, b) for b, a in zip(before, after, strict=True)]
        paired = ""
        if len(pairs) > 1:
            spread = f"{min(pairs):.3f} to {max(pairs):.3f}"
            paired = f"{statistics.median(pairs):.3f} ({spread})"
        rows.append([measure, cell(before), cell(after), f"{ratio:.3f}", paired])
    failed = ["failed requests (all loads)", str(errors["before"]), str(errors["after"])]
    rows.append([*failed, "", ""])
    header = [
        "Measure",
        "before",
        "after",
        "after/before",
        "per-round after/before: median (lowest to highest)",
    ]
    return md_table(header, rows)


def describe_trees(rev: str) -> dict[str, str]:
    head = git("rev-parse", "--short", "HEAD")
    changed = git("diff", "--shortstat", "HEAD", "--", "src")
    return {
        "Before": f"`{rev}` ({git('rev-parse', '--short', rev)}) in a detached git worktree, "
        "run with PYTHONPATH=<worktree>/src",
        "After": f"this checkout, HEAD {head}"
        + (f" plus uncommitted changes under src/ ({changed})" if changed else "")
        + ", PYTHONPATH=src",
    }


def section(samples: Samples, errors: Errors, mode: Mode, facts: dict[str, str], rev: str) -> str:
    pinning = f"servers on core {SERVER_CPU}, load and mock on core {LOAD_CPU}"
    tool = "wrk" if load_tool() == "wrk" else "the python asyncio load generator (no wrk)"
    facts = facts | {
        "Method": f"{mode.rounds} rounds alternating before-after / after-before; "
        f"{mode.load_s:.0f} s loads at c=32 / c=8, {mode.latency_s:.0f} s at c=1, by {tool}, "
        f"after a {mode.warmup_s:.0f} s warm-up; cells: median of the rounds (lowest to "
        "highest); CPU-ms: the server's user+system time (psutil) over the load per answered "
        f"request; {pinning if have_taskset() else 'no taskset: not pinned'}",
        "Setup": "a temp data dir per server, a `faas token` from its own tree, defaults "
        "otherwise (request log lines on, in-memory kv); gateway: tenant RPM/TPM limits on, "
        "never reached, temperature 0.7, mock upstream at 0 ms; cache: one stored key; RAG: "
        f"{mode.docs} documents of 10 paragraphs (chunk_size 80), one fixed hybrid query",
    }
    before = "the Step 9 refactor" if rev == DEFAULT_BEFORE else f"`{rev}`"
    parts = [
        f"## Before vs after {before} (`bench/refactor.py`) — {today()}",
        f"The same measures against the code at {before} and the working tree, in one run. A "
        "ratio near 1 is no change; read it against the spread of the rounds in brackets and "
        "of the per-round ratios.",
        table(samples, errors),
        "\n".join(environment_lines(facts)),
    ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of 'before'")
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a load below")
    parser.add_argument("--wait-minutes", type=float, default=None, help="default 20; quick 0")
    parser.add_argument(
        "--rounds", type=int, default=None, help="more rounds resolve a smaller change (default 7)"
    )
    parser.add_argument("--only", default="gateway,cache,rag", help="the measures to run")
    args = parser.parse_args()
    phases = {p.__name__: p for p in (gateway, cache, rag)}
    chosen = [phases[name] for name in args.only.split(",") if name in phases]
    if not chosen:
        parser.error(f"--only: one or more of {', '.join(phases)}")
    mode = Mode.of(args.quick)
    if args.rounds is not None:
        mode = replace(mode, rounds=max(1, args.rounds))
    wait_min = args.wait_minutes if args.wait_minutes is not None else (0 if args.quick else 20)
    if wait_min:
        wait_for_quiet(args.max_load, wait_min * 60)
    if have_taskset():
        os.sched_setaffinity(0, {LOAD_CPU})  # the script's own client work stays off core 0
    work = Path(tempfile.mkdtemp(prefix="faas-bench-refactor-"))
    load_start, started = os.getloadavg(), time.monotonic()
    print(f"work dir {work}; load average {load_start[0]:.2f}")
    samples: Samples = {}
    errors: Errors = Counter()
    with worktree(args.before) as before:
        secret = secrets.token_urlsafe(48)
        trees = [Tree("before", before / "src", secret), Tree("after", ROOT / "src", secret)]
        for tree in trees:
            check_import(tree, work)
        facts = describe_trees(args.before)
        for phase in chosen:
            print(f"{phase.__name__}:")
            samples |= phase(trees, work, mode, errors)
    load_end = os.getloadavg()
    facts["Load average (1 min)"] = (
        f"{load_start[0]:.2f} at the start (5-min {load_start[1]:.2f}), {load_end[0]:.2f} at "
        "the end; the benchmark itself keeps both cores busy"
    )
    facts["Run took"] = f"{(time.monotonic() - started) / 60:.1f} min"
    shutil.rmtree(work, ignore_errors=True)  # kept when the run fails, for its logs
    text = section(samples, errors, mode, facts, args.before)
    print()
    publish(text, save=not args.no_save)


if __name__ == "__main__":
    main()
