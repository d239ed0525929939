"""Ingestion end to end in one process: upload → job → RAG index → query that cites the right
document and page; bad files refused with the right status and nothing kept; SSRF refused."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.unit.test_documents import (
    encrypt,
    make_docx,
    make_pdf,
    report_pdf,
    zip_bomb,
    zip_of_many,
)

A = auth("acme")
B = auth("globex")
UPLOAD = "/api/v1/ingestion/upload"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
async def env(tmp_path: Any, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(
        gateway_models=routing,
        max_upload_bytes=2_000_000,
        ingestion_url_allowlist=["127.0.0.1"],
        job_retry_base_s=0.01,
    )
    async with platform(settings, ["gateway", "rag", "ingestion"]) as env:
        yield env


async def wait_file(env: Platform, file_id: str, headers: dict[str, str] = A) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        data = (await env.client.get(f"/api/v1/ingestion/files/{file_id}", headers=headers)).json()
        if data["data"]["status"] in ("indexed", "failed", "extracted"):
            return dict(data["data"])
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"file {file_id} stayed {data['data']['status']}")
        await asyncio.sleep(0.02)


async def upload(env: Platform, files: list[tuple[str, bytes, str]], **form: str) -> Any:
    parts = [("files", (name, data, ctype)) for name, data, ctype in files]
    return await env.client.post(UPLOAD, files=parts, data=form, headers=A)


async def test_pdf_upload_is_indexed_and_the_answer_cites_the_right_page(env: Platform) -> None:
    response = await upload(env, [("report.pdf", report_pdf(4), "application/pdf")])
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]["files"][0]
    assert response.headers["location"] == f"/api/v1/jobs/{accepted['job_id']}"
    done = await wait_file(env, accepted["file_id"])
    assert done["status"] == "indexed", done
    assert done["format"] == "pdf" and done["pages"] == 4 and done["chunks"] >= 1
    job = (await env.client.get(accepted["location"], headers=A)).json()["data"]
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    query = {"query": "Which section is anchored by MARKER-P3?", "top_k": 3}
    answer = (await env.client.post("/api/v1/rag/query", json=query, headers=A)).json()["data"]
    first = answer["citations"][0]
    assert first["document_id"] == done["document_id"]
    assert first["page"] == 3
    assert "MARKER-P3" in first["snippet"] or 3 in answer["sources"][0]["pages"]


async def test_several_files_become_several_jobs(env: Platform) -> None:
    files = [
        ("notes.md", b"# Notes\n\nThe launch code name is BLUEBIRD.\n", "text/markdown"),
        ("plain.txt", b"Quarterly numbers are due on Friday.", "text/plain"),
        ("people.csv", b"name,team\nAda,research\nLinus,kernel\n", "text/csv"),
        ("handbook.docx", make_docx(), "application/octet-stream"),
    ]
    response = await upload(env, files, collection="misc", metadata='{"batch": 7}')
    accepted = response.json()["data"]["files"]
    assert [a["format"] for a in accepted] == ["markdown", "text", "csv", "docx"]
    for item in accepted:
        assert (await wait_file(env, item["file_id"]))["status"] == "indexed"
    hits = (
        await env.client.post(
            "/api/v1/rag/search",
            json={"query_text": "BLUEBIRD", "mode": "keyword", "collection": "misc"},
            headers=A,
        )
    ).json()["data"]["results"]
    assert hits[0]["metadata"]["filename"] == "notes.md"
    assert hits[0]["metadata"]["batch"] == 7


async def test_type_is_judged_by_content_and_unsupported_is_415_keeping_nothing(
    env: Platform,
) -> None:
    response = await upload(
        env,
        [("fine.txt", b"hello", "text/plain"), ("photo.pdf", PNG, "application/pdf")],
    )
    assert response.status_code == 415
    body = response.json()
    assert body["error"]["code"] == "unsupported_media_type"
    assert body["error"]["details"]["file"] == "photo.pdf"
    listed = (await env.client.get("/api/v1/ingestion/files", headers=A)).json()["data"]
    assert listed["total"] == 0
    assert not any((env.runtime.settings.data_dir / "uploads" / "acme").iterdir())


async def test_empty_file_is_422(env: Platform) -> None:
    response = await upload(env, [("empty.txt", b"", "text/plain")])
    assert response.status_code == 422
    assert response.json()["error"]["details"]["reason"] == "empty"


async def test_file_over_the_limit_is_413(env: Platform) -> None:
    response = await upload(env, [("big.txt", b"a" * 2_100_000, "text/plain")])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def assert_nothing_kept(env: Platform) -> None:
    listed = (await env.client.get("/api/v1/ingestion/files", headers=A)).json()["data"]
    assert listed["total"] == 0
    jobs = (await env.client.get("/api/v1/jobs", headers=A)).json()["data"]
    assert jobs["total"] == 0
    uploads = env.runtime.settings.data_dir / "uploads" / "acme"
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("secret.pdf", encrypt(report_pdf(1), "pw"), "encrypted"),
        ("renamed.bin", encrypt(report_pdf(1), "pw", algorithm="RC4-128"), "encrypted"),
        ("bomb.docx", zip_bomb(), "zip_bomb"),
        ("crowded.docx", zip_of_many(10_001), "zip_bomb"),
        ("broken.docx", b"PK\x03\x04 not a zip at all", "corrupt"),
    ],
)
async def test_encrypted_files_and_zip_bombs_are_422_at_upload_keeping_nothing(
    env: Platform, name: str, data: bytes, reason: str
) -> None:
    good = ("fine.txt", b"a file that is fine on its own", "text/plain")
    response = await upload(env, [good, (name, data, "application/octet-stream")])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"]["reason"] == reason
    assert error["details"]["file"] == name
    await assert_nothing_kept(env)


async def test_a_pdf_with_an_empty_user_password_is_accepted(env: Platform) -> None:
    response = await upload(env, [("open.pdf", encrypt(report_pdf(2), ""), "application/pdf")])
    assert response.status_code == 202, response.text
    done = await wait_file(env, response.json()["data"]["files"][0]["file_id"])
    assert done["status"] == "indexed" and done["pages"] == 2


async def test_an_image_only_pdf_fails_its_job_with_the_reason_and_no_retry(env: Platform) -> None:
    """Only text extraction finds that a PDF has no text: the job fails, it is not retried."""
    scanned = make_pdf([["x"], ["y"]], image_only=True)
    response = await upload(env, [("scan.pdf", scanned, "application/pdf")])
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]["files"][0]
    done = await wait_file(env, accepted["file_id"])
    assert done["status"] == "failed" and "no extractable text" in done["error"]
    job = (await env.client.get(accepted["location"], headers=A)).json()["data"]
    assert job["status"] == "failed" and job["attempts"] == 1


@pytest.mark.parametrize("count", [0, 11])
async def test_an_upload_takes_one_to_ten_files(env: Platform, count: int) -> None:
    files = [(f"f{i}.txt", b"some words", "text/plain") for i in range(count)]
    response = await upload(env, files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed" and error["message"]
    assert "files" in str(error["details"])
    await assert_nothing_kept(env)


async def test_ten_files_are_accepted(env: Platform) -> None:
    files = [(f"f{i}.txt", b"some words %d" % i, "text/plain") for i in range(10)]
    response = await upload(env, files, auto_ingest="false")
    assert response.status_code == 202, response.text
    assert len(response.json()["data"]["files"]) == 10


async def test_pii_is_redacted_when_asked(env: Platform) -> None:
    text = b"Contact jane.doe@example.com or pay with 4111 1111 1111 1111 today."
    response = await upload(env, [("pii.txt", text, "text/plain")], redact_pii="true")
    done = await wait_file(env, response.json()["data"]["files"][0]["file_id"])
    hits = (
        await env.client.post(
            "/api/v1/rag/search", json={"query_text": "contact pay", "mode": "keyword"}, headers=A
        )
    ).json()["data"]["results"]
    assert hits and hits[0]["document_id"] == done["document_id"]
    assert "[EMAIL]" in hits[0]["text"] and "[CARD]" in hits[0]["text"]
    assert "jane.doe" not in hits[0]["text"]


async def test_files_are_tenant_scoped(env: Platform) -> None:
    response = await upload(env, [("mine.txt", b"private words", "text/plain")])
    file_id = response.json()["data"]["files"][0]["file_id"]
    await wait_file(env, file_id)
    assert (
        await env.client.get(f"/api/v1/ingestion/files/{file_id}", headers=B)
    ).status_code == 404
    assert (await env.client.get("/api/v1/ingestion/files", headers=B)).json()["data"]["total"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://localhost./x",
        "file:///etc/passwd",
        "ftp://example.com/x",
    ],
)
async def test_url_ingestion_refuses_private_and_non_http_targets(env: Platform, url: str) -> None:
    response = await env.client.post("/api/v1/ingestion/url", json={"url": url}, headers=A)
    assert response.status_code == 422, response.text


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect-to-private":
            self.send_response(302)
            self.send_header("Location", "http://10.1.2.3/secret")
            self.end_headers()
            return
        body = (
            b"<html><head><title>Wiki</title><script>evil()</script></head><body>"
            b"<h1>Onboarding</h1><p>New hires get a laptop on day one.</p></body></html>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def page_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_allow_listed_url_is_fetched_and_indexed(env: Platform, page_server: str) -> None:
    response = await env.client.post(
        "/api/v1/ingestion/url", json={"url": f"{page_server}/wiki"}, headers=A
    )
    assert response.status_code == 202, response.text
    done = await wait_file(env, response.json()["data"]["files"][0]["file_id"])
    assert done["status"] == "indexed" and done["format"] == "html"
    hits = (
        await env.client.post(
            "/api/v1/rag/search", json={"query_text": "laptop", "mode": "keyword"}, headers=A
        )
    ).json()["data"]["results"]
    assert hits and "evil" not in hits[0]["text"]


async def test_a_redirect_to_a_private_address_is_refused(env: Platform, page_server: str) -> None:
    response = await env.client.post(
        "/api/v1/ingestion/url", json={"url": f"{page_server}/redirect-to-private"}, headers=A
    )
    done = await wait_file(env, response.json()["data"]["files"][0]["file_id"])
    assert done["status"] == "failed"
    assert "private" in done["error"]
