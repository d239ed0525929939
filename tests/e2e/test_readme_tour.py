"""The README's five-minute tour and the services' README examples, run verbatim with bash
against a real `faas up` (every service, embedded defaults, a temporary data dir) on a port that
is not the default: the tour names its address once (`B=http://localhost:8000`), and this test
sets that one line to the test's address, as a user on another port would.

Every `curl` in a block must answer 2xx (`--fail-with-body` under `set -euo pipefail`), unless
the block is marked `<!-- tour: expect NNN -->`, where every call must answer NNN instead.
`<!-- tour: skip -->` marks a block the test does not run (`make up`: it starts faas itself).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_faas_up import faas
from tests.support.faas_process import running_faas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "src" / "faas" / "services"
TOUR_ADDRESS = re.compile(r"^B=http://localhost:8000\b.*$", re.MULTILINE)
BLOCK = re.compile(
    r"(?:<!--\s*tour:\s*(?P<marker>[^>]*?)\s*-->\s*\n)?```bash\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)
# curl older than 7.76 has no --fail-with-body: it still fails then, without showing the body.
STRICT = """FAIL=--fail-with-body
command curl --fail-with-body -V >/dev/null 2>&1 || FAIL=--fail
curl() { command curl "$FAIL" "$@"; }"""
EXPECT = """curl() {
  local body code
  body=$(mktemp)
  code=$(command curl -o "$body" -w '%{http_code}' "$@") || true
  cat "$body"; echo; rm -f "$body"
  if [ "$code" != STATUS ]; then echo "expected HTTP STATUS, got $code" >&2; return 1; fi
}"""


@dataclass(frozen=True)
class Block:
    code: str
    skip: bool = False
    expect: int | None = None  # None: every call must succeed


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start : end if end != -1 else len(text)]


def bash_blocks(markdown: str) -> list[Block]:
    blocks = []
    for match in BLOCK.finditer(markdown):
        marker = (match.group("marker") or "").strip()
        expect = re.fullmatch(r"expect (\d{3})", marker)
        if marker and not expect and not marker.startswith("skip"):
            raise AssertionError(f"unknown tour marker {marker!r}")
        blocks.append(
            Block(
                match.group("code"),
                skip=marker.startswith("skip"),
                expect=int(expect.group(1)) if expect else None,
            )
        )
    return blocks


def tour_blocks() -> list[Block]:
    return bash_blocks(section((ROOT / "README.md").read_text(), "## A five-minute tour"))


def example_blocks(service: str) -> list[Block]:
    readme = (SERVICES / f"{service}_service" / "README.md").read_text()
    return bash_blocks(section(readme, "## Example"))


def tour_script(blocks: list[Block], url: str) -> str:
    """The tour with its one address line set to `url`: every other URL is `$B/...`."""
    code = script(blocks, url, rewrite_urls=False)
    code, count = TOUR_ADDRESS.subn(f"B={url}", code)
    assert count == 1, "the tour must set B=http://localhost:8000 exactly once"
    assert ":8000" not in code, "a tour URL does not use $B"
    return code


def script(blocks: list[Block], url: str, *, rewrite_urls: bool = True) -> str:
    """One bash script: the blocks in order (variables carry over), with this test's URL and
    `faas` command, and curl made to fail on any status other than the one expected."""
    faas_cmd = f"{shlex.quote(sys.executable)} -m faas"
    parts = ["set -euo pipefail"]
    for block in blocks:
        if block.skip:
            continue
        lines = [line for line in block.code.splitlines() if "xdg-open" not in line]
        code = "\n".join(lines)
        if rewrite_urls:
            code = code.replace("localhost:8000", url.removeprefix("http://"))
        parts.append(
            STRICT if block.expect is None else EXPECT.replace("STATUS", str(block.expect))
        )
        parts.append(code.replace(".venv/bin/faas", faas_cmd))
    return "\n".join(parts) + "\n"


@dataclass
class Platform:
    url: str
    env: dict[str, str]

    def run(self, blocks: list[Block], cwd: Path, token: str | None = None) -> str:
        return self.run_script(script(blocks, self.url), cwd, token)

    def run_script(self, code: str, cwd: Path, token: str | None = None) -> str:
        env = dict(self.env)
        if token is not None:
            env["FAAS_TOKEN"] = token
        result = subprocess.run(
            ["bash", "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert result.returncode == 0, (
            f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n"
            f"--- stderr\n{result.stderr[-3000:]}"
        )
        return result.stdout


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_faas(tmp_path_factory.mktemp("readme")) as faas_up:
        assert faas_up.port != 8000
        yield Platform(faas_up.url, faas_up.env)


def test_the_tour_has_an_example_for_every_service() -> None:
    blocks = tour_blocks()
    assert blocks[0].skip and blocks[0].code.startswith("make up ")
    checked = "\n".join(b.code for b in blocks if not b.skip and b.expect is None)
    for path in (
        "/v1/chat/completions",  # gateway
        "/api/v1/cache",
        "/api/v1/rag/query",
        "/api/v1/ingestion/upload",
        "/api/v1/agents",
        "/api/v1/prompts/render",
        "/api/v1/ml/models/train",
        "/api/v1/ml/models/exam/predict",
        "/api/v1/llmops/operations",
        "/api/v1/prompt-generator/permissions",  # prompt_generator
        "/api/v1/jobs",
    ):
        assert path in checked, f"no verified tour example calls {path}"
    assert any(b.expect == 422 and "/api/v1/prompt-generator/agents" in b.code for b in blocks)


def test_the_readme_tour_runs_verbatim(platform: Platform, tmp_path: Path) -> None:
    out = platform.run_script(tour_script(tour_blocks(), platform.url), tmp_path)
    for expected in (
        '"found":true',
        '"found":false',
        '"status":"indexed"',
        '"citations":[{',
        '"answer":"[mock] Refunds are paid within 14 days of the return [1]."',
        '"cited_in_answer":true',
        '"confidence":0.857',
        '"type":"tool_call","id":',  # the offline agent searches the documents
        '"type":"done"',
        '"rendered":"Hello Ada!"',
        '"rendered":"Welcome back, Ada!"',
        '"predictions":["yes","no"]',
        '"key":"gpt-4o-mini"',
        '"key":"chat-default"',  # the gateway's usage events reached LLMOps
        '"code":"validation_failed"',  # the prompt generator with the mock model
        '"allowed":true,"reason":"granted execute"',
    ):
        assert expected in out, f"{expected} not in the tour's output:\n{out[-6000:]}"


EXAMPLE_OUTPUT = {
    "gateway": ['"content":"[mock] ', '"deployment":"mock:faas-mock"'],
    "cache": ['"found":true,"value":[1,2,3]'],
    "rag": ['"chunks":1', '"citations":[{"n":1'],
    "prompt": ['"rendered":"Hello Ada!"'],
    "ml": ['"cv_folds":3', '"predictions":["yes"]', '"data":["no"]', '"status":"queued"'],
    "ingestion": ['"status":"indexed"'],
    "agent": ['"name":"price_with_tax"', '"origin":"prompt_generator"'],
    "llmops": ['"accepted":0,"duplicates":2', '"key":"helpdesk"', '"error_code":"timeout"'],
}


@pytest.mark.parametrize("service", sorted(EXAMPLE_OUTPUT))
def test_the_service_readme_example_runs(platform: Platform, service: str, tmp_path: Path) -> None:
    blocks = example_blocks(service)
    assert blocks, f"the {service} README has no bash example"
    token = faas("token", "--tenant", f"readme-{service}", "--user", "ann", env=platform.env)
    out = platform.run(blocks, tmp_path, token=token)
    for expected in EXAMPLE_OUTPUT[service]:
        assert expected in out, f"{expected} not in the {service} example's output:\n{out[-4000:]}"


def test_a_failing_call_fails_the_run(platform: Platform, tmp_path: Path) -> None:
    wrong_path = Block('curl -s localhost:8000/api/v1/cache/nope/extra -H "$H"\n')
    wrong_status = Block("curl -s localhost:8000/readyz\n", expect=422)
    token = faas("token", "--tenant", "readme-failing", env=platform.env)
    header = Block('H="Authorization: Bearer $FAAS_TOKEN"\n')
    for block, error in ((wrong_path, "exit 22"), (wrong_status, "expected HTTP 422, got 200")):
        with pytest.raises(AssertionError, match=error):
            platform.run([header, block], tmp_path, token=token)
