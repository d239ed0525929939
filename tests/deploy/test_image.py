"""The container image, tested without a container daemon. The Dockerfile's own pip commands
build the wheel from a build context filtered by .dockerignore and install it into a fresh venv
outside the checkout; the installed `faas` then migrates, serves and passes the image's
HEALTHCHECK from the package alone. A lint of the Dockerfile checks the rules the image follows:
stages, a pinned base, a non-root user, no build tools or caches in the final stage."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import typer
from alembic.script import ScriptDirectory

from faas import __version__
from faas.cli import app as cli_app
from faas.shared.database import MIGRATIONS_DIR
from tests.e2e.test_faas_up import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
WHEELS = "/wheels"  # where the Dockerfile's build stage puts every wheel
PINNED_TAG = re.compile(r":\d+\.\d+\.\d+[\w.-]*$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
COMPILERS = ("build-essential", "gcc", "g++", "clang", "cmake", "make ")
Test = Callable[..., None]


# -- a small Dockerfile parser ------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def args(self) -> dict[str, str]:
        """The stage's ARG defaults, as a build without --build-arg sees them."""
        pairs = (a.split("=", 1) if "=" in a else (a, "") for a in self.all("ARG"))
        return {name.strip(): shlex.split(value)[0] if value else "" for name, value in pairs}

    def env(self) -> dict[str, str]:
        return dict(pair.split("=", 1) for a in self.all("ENV") for pair in shlex.split(a))


def instructions(text: str) -> list[Instruction]:
    """One Instruction per logical line: continuation lines (a trailing backslash) are joined,
    and comment lines are dropped, also inside a continuation, as Docker does."""
    parsed: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        parsed.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, f"the Dockerfile ends inside a continuation: {pending!r}"
    return parsed


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name))
        else:
            assert found, f"{instruction.keyword} before the first FROM"
            found[-1].instructions.append(instruction)
    return found


def shell_command(run: str) -> str:
    """The command of a RUN (or HEALTHCHECK), without its flags (`--mount=...`)."""
    return re.sub(r"^(--\S+\s+)*", "", run)


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return stages(DOCKERFILE.read_text())


def build_stage(parsed: list[Stage]) -> Stage:
    """The stage whose wheels the final stage mounts."""
    mounts = " ".join(parsed[-1].all("RUN"))
    source = re.search(r"--mount=\S*from=([\w-]+)", mounts)
    assert source, "the final stage installs nothing from a build stage"
    return next(s for s in parsed if s.name == source.group(1))


# -- the lint -----------------------------------------------------------------------------------


def test_the_image_is_built_in_stages(dockerfile: list[Stage]) -> None:
    assert len(dockerfile) >= 2
    assert build_stage(dockerfile) is not dockerfile[-1]


def test_every_base_image_is_pinned_by_digest_or_exact_version(dockerfile: list[Stage]) -> None:
    names: set[str] = set()
    for stage in dockerfile:
        if stage.base not in names:
            assert ":latest" not in stage.base, stage.base
            assert DIGEST.search(stage.base) or PINNED_TAG.search(stage.base), stage.base
        if stage.name:
            names.add(stage.name)


def test_the_final_stage_runs_as_a_fixed_non_root_user(dockerfile: list[Stage]) -> None:
    user, _, group = dockerfile[-1].last("USER").partition(":")
    assert user.isdigit() and int(user) != 0, "a numeric UID lets runAsNonRoot verify it"
    assert group != "0"


def test_nothing_is_added_from_a_url(dockerfile: list[Stage]) -> None:
    for stage in dockerfile:
        for added in stage.all("ADD"):
            assert not re.search(r"\bhttps?://", added), added


def test_the_final_stage_installs_without_caches_or_build_tools(dockerfile: list[Stage]) -> None:
    runs = dockerfile[-1].all("RUN")
    installs = [r for r in runs if "pip install" in r]
    assert installs
    for run in installs:
        assert run.count("pip install") == run.count("--no-cache-dir"), run
    for run in runs:
        assert not any(tool in run for tool in COMPILERS), run
        if "apt-get install" in run:
            assert "rm -rf /var/lib/apt/lists" in run, run


def test_the_entrypoint_runs_a_faas_command(dockerfile: list[Stage]) -> None:
    final = dockerfile[-1]
    assert json.loads(final.last("ENTRYPOINT")) == ["faas"]
    commands = typer.main.get_group(cli_app).commands
    assert json.loads(final.last("CMD"))[0] in commands


def test_the_data_dir_is_a_volume_and_the_healthcheck_probes_livez(
    dockerfile: list[Stage],
) -> None:
    final = dockerfile[-1]
    env = final.env()
    assert json.loads(final.last("VOLUME")) == [env["FAAS_DATA_DIR"]]
    healthcheck = final.last("HEALTHCHECK")
    assert "/livez" in healthcheck and "HEALTHCHECK_PORT" in healthcheck
    assert env["HEALTHCHECK_PORT"] == "8000"


def test_the_labels_carry_the_package_version(dockerfile: list[Stage]) -> None:
    final = dockerfile[-1]
    assert 'org.opencontainers.image.version="${VERSION}"' in " ".join(final.all("LABEL"))
    assert final.args()["VERSION"] == __version__


# -- the image's install, outside a container ---------------------------------------------------


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, data_dir: Path) -> dict[str, str]:
        """The environment of a fresh shell: the venv first on PATH, nothing of the checkout
        (PYTHONPATH, an active venv) and no FAAS_ setting but the data dir."""
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FAAS_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
        }
        path = f"{self.venv / 'bin'}{os.pathsep}{keep.get('PATH', '')}"
        return keep | {"PATH": path, "FAAS_DATA_DIR": str(data_dir), "FAAS_LOG_REQUESTS": "false"}


def dockerignored(relative: str, rules: list[str]) -> bool:
    """Whether .dockerignore keeps `relative` out of the build context: the last rule that
    matches the path or one of its parent directories decides; `!` re-includes."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            ignored = not negated
    return ignored


def build_context(stage: Stage, context: Path) -> None:
    """What the stage's COPY lines put in its WORKDIR, from the checkout as .dockerignore
    filters it."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [r.strip() for r in lines if r.strip() and not r.startswith("#")]
    for copy in stage.all("COPY"):
        *sources, destination = copy.split()
        assert not destination.startswith("/"), f"COPY into the WORKDIR: {copy}"
        for source in sources:
            target = context / destination
            if destination.endswith("/") or len(sources) > 1:
                target = target / Path(source).name
            files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
            for path in files:
                relative = path.relative_to(ROOT).as_posix()
                if path.is_file() and not dockerignored(relative, rules):
                    copied = target / path.relative_to(ROOT / source)
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copied)


def run_as_the_dockerfile_does(
    run: str, stage: Stage, cwd: Path, env: dict[str, str], wheels: Path
) -> None:
    """A RUN of the Dockerfile, its wheel directory moved to `wheels`. --no-cache-dir is
    dropped: pip's cache only makes the next run fast, it does not change what is installed."""
    command = shell_command(run).replace(WHEELS, str(wheels))
    command = command.replace(" --no-cache-dir", "")
    started = time.monotonic()
    result = subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env=env | stage.args(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    print(f"{time.monotonic() - started:5.1f}s  {command[:100]}")


@pytest.fixture(scope="module")
def installed(
    dockerfile: list[Stage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("image")
    started = time.monotonic()
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env, wheels = Installed(venv, work).env(work / "data"), work / "wheels"
    build = build_stage(dockerfile)
    build_context(build, work / "context")
    for run in build.all("RUN"):
        run_as_the_dockerfile_does(run, build, work / "context", env, wheels)
    for run in dockerfile[-1].all("RUN"):
        if "pip install" in run:
            run_as_the_dockerfile_does(run, dockerfile[-1], work, env, wheels)
    print(f"wheel built and installed as the image does in {time.monotonic() - started:.0f}s")
    yield Installed(venv, work)
    shutil.rmtree(work, ignore_errors=True)


def needs_the_install(test: Test) -> Test:
    """The tests that use the installed wheel: about a minute of pip, once per module."""
    for mark in (pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)):
        test = mark(test)
    return test


def faas(installed: Installed, *args: str, data_dir: Path) -> str:
    result = subprocess.run(
        [installed.bin("faas"), *args],
        cwd=installed.work,
        env=installed.env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


@contextmanager
def serving(installed: Installed, service: str, data_dir: Path) -> Iterator[str]:
    """`faas serve <service>` from the venv, stopped afterwards; it must exit 0."""
    port = free_port()
    log = installed.work / f"{service}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [installed.bin("faas"), "serve", service, "--port", str(port)],
            cwd=installed.work,
            env=installed.env(data_dir),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, proc, timeout_s=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-4000:]}") from None
        yield url
    finally:
        assert stop(proc) == 0, log.read_text(errors="replace")[-4000:]


def package_files(names: Iterator[str]) -> set[str]:
    return {n for n in names if "__pycache__" not in n and not n.endswith(".pyc")}


@needs_the_install
def test_the_wheel_carries_every_file_of_the_package(installed: Installed) -> None:
    source = ROOT / "src"
    files = (p for p in (source / "faas").rglob("*") if p.is_file())
    expected = package_files(p.relative_to(source).as_posix() for p in files)
    assert {"faas/migrations/script.py.mako", "faas/integrations/proto/faas.proto"} <= expected
    (built,) = (installed.work / "wheels").glob("faas-*.whl")
    with zipfile.ZipFile(built) as wheel:
        shipped = package_files(n for n in wheel.namelist() if n.startswith("faas/"))
    assert expected - shipped == set(), "add them to [tool.setuptools.package-data]"


@needs_the_install
def test_the_installed_faas_is_the_wheels_own(installed: Installed, tmp_path: Path) -> None:
    where = subprocess.run(
        [installed.bin("python"), "-c", "import faas; print(faas.__file__)"],
        cwd=installed.work,
        env=installed.env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.venv), where
    assert faas(installed, "version", data_dir=tmp_path) == __version__


@needs_the_install
def test_migrate_applies_every_migration_shipped(installed: Installed, tmp_path: Path) -> None:
    faas(installed, "migrate", data_dir=tmp_path)
    with sqlite3.connect(tmp_path / "faas.db") as db:
        applied = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
    assert applied == set(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def healthcheck(dockerfile: list[Stage], installed: Installed, port: int) -> int:
    """The exit code of the image's HEALTHCHECK command against `port`."""
    command = shell_command(dockerfile[-1].last("HEALTHCHECK")).removeprefix("CMD ")
    env = installed.env(installed.work) | {"HEALTHCHECK_PORT": str(port)}
    check = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30)
    return check.returncode


@needs_the_install
def test_the_gateway_serves_ready_and_passes_the_healthcheck(
    dockerfile: list[Stage], installed: Installed, tmp_path: Path
) -> None:
    with serving(installed, "gateway", tmp_path) as url:
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        assert healthcheck(dockerfile, installed, int(url.rsplit(":", 1)[1])) == 0
    assert healthcheck(dockerfile, installed, free_port()) != 0


@needs_the_install
def test_llmops_serves_its_dashboard_and_the_offline_docs(
    installed: Installed, tmp_path: Path
) -> None:
    with serving(installed, "llmops", tmp_path) as url:
        dashboard = httpx.get(f"{url}/llmops/dashboard", timeout=5)
        assert dashboard.status_code == 200 and "<title>faas LLMOps</title>" in dashboard.text
        docs = httpx.get(f"{url}/docs", timeout=5)
        assert docs.status_code == 200
        assets = set(re.findall(r"/docs/static/[\w.-]+", docs.text))
        assert len(assets) >= 2, docs.text
        for asset in assets:
            assert httpx.get(f"{url}{asset}", timeout=10).status_code == 200, asset
