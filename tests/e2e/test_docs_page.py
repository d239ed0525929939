"""The API docs of a real `faas up`, rendered by headless Chromium with every host but this one
unresolvable: Swagger UI (/docs) and ReDoc (/redoc) load their scripts from the app itself, so
they work offline and list the operations."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_llmops_dashboard import chromium
from tests.support.faas_process import running_faas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Any other host fails to resolve, as on a machine without internet.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_faas(tmp_path_factory.mktemp("docs-page")) as up:
        yield up.url


def render(page: str, profile: Path, screenshot: Path) -> str:
    browser = chromium()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        OFFLINE,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    subprocess.run(
        [browser, *flags, "--window-size=1280,1600", f"--screenshot={screenshot}", page],
        capture_output=True,
        timeout=120,
    )
    print(f"screenshot: {screenshot}")
    return dom


def test_swagger_ui_lists_the_operations_offline(server: str, tmp_path: Path) -> None:
    dom = render(f"{server}/docs", tmp_path / "profile", tmp_path / "docs.png")
    assert 'class="swagger-ui"' in dom, dom[-2000:]
    # Swagger UI draws one block per operation, with its method and path.
    assert dom.count("opblock-summary-path") > 50, dom[-2000:]
    for path in ("/v1/chat/completions", "/v1/embeddings", "/api/v1/ml/datasets"):
        assert f'data-path="{path}"' in dom
    assert "Authorize" in dom  # the bearer scheme, to paste a token from `faas token`
    assert (tmp_path / "docs.png").stat().st_size > 10_000


def test_redoc_lists_the_operations_offline(server: str, tmp_path: Path) -> None:
    dom = render(f"{server}/redoc", tmp_path / "profile", tmp_path / "redoc.png")
    assert "/v1/chat/completions" in dom, dom[-2000:]
    assert "ChatCompletionBody" in dom or "messages" in dom
    assert (tmp_path / "redoc.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("anchor", "shown"),
    [
        # The example written on the route (the body is parsed by the route itself).
        ("openai-compatible/chat_completions_v1_chat_completions_post", "what is a semantic cache"),
        # The example of the request model's schema.
        ("cache/cache_set_api_v1_cache_post", "greeting"),
    ],
)
def test_an_opened_operation_shows_its_example_body(
    server: str, tmp_path: Path, anchor: str, shown: str
) -> None:
    # A deep link opens the operation, as a click on it would.
    dom = render(f"{server}/docs#/{anchor}", tmp_path / "profile", tmp_path / "operation.png")
    assert "body-param__example" in dom or "microlight" in dom, dom[-2000:]
    assert shown in dom.lower()
