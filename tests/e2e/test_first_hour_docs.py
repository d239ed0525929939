"""Step 8 — a new user's first hour with the API docs and their first requests, against a real
`faas up` (every service, embedded defaults, offline models): every operation that takes a body
documents it with a schema and a working example, and the two mistakes a newcomer makes with
curl get one clear line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.e2e.test_faas_up import faas
from tests.support.faas_process import running_faas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Actions whose whole input is their path: nothing to document.
BODYLESS = {
    ("post", "/api/v1/gateway/reload"),
    ("post", "/api/v1/jobs/{job_id}/cancel"),
    ("post", "/api/v1/keys/{key_id}/rotate"),
    ("post", "/api/v1/gateway/provider-keys/rotate"),
}
WITH_BODY = ("post", "put", "patch")


class Platform:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers | kwargs.pop("headers", {})
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_faas(tmp_path_factory.mktemp("first-hour-docs")) as up:
        yield Platform(up.url, faas("token", "--tenant", "acme", "--user", "ann", env=up.env))


@pytest.fixture(scope="module")
def openapi(platform: Platform) -> dict[str, Any]:
    response = httpx.get(f"{platform.url}/openapi.json", timeout=30)
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method in WITH_BODY and (method, path) not in BODYLESS:
                yield method, path, operation


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        resolved: dict[str, Any] = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return resolved
    return schema


def _example(spec: dict[str, Any], media: dict[str, Any]) -> Any:
    """What Swagger UI fills "Try it out" with: the media type's example, else the schema's
    (for a union, its first member's)."""
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        return next(iter(media["examples"].values()))["value"]
    schema = _resolve(spec, media["schema"])
    for member in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        examples = _resolve(spec, member).get("examples")
        if examples:
            return examples[0]
    return None


def _is_file(field: dict[str, Any]) -> bool:
    return field.get("format") == "binary" or "contentMediaType" in field


def _form_prefilled(spec: dict[str, Any], media: dict[str, Any]) -> bool:
    """A form is filled in field by field: each is a file to pick, or has a default."""
    fields = _resolve(spec, media["schema"]).get("properties", {})
    return bool(fields) and all(
        "default" in f or "examples" in f or _is_file(f) or _is_file(f.get("items", {}))
        for f in fields.values()
    )


def test_every_operation_with_a_body_documents_its_schema_and_a_valid_example(
    openapi: dict[str, Any],
) -> None:
    problems = []
    for method, path, operation in _operations(openapi):
        where = f"{method.upper()} {path}"
        content = operation.get("requestBody", {}).get("content", {})
        if not content:
            problems.append(f"{where}: no request body in the OpenAPI")
        for media_type, media in content.items():
            if not media.get("schema"):
                problems.append(f"{where} ({media_type}): no schema")
                continue
            example = _example(openapi, media)
            if media_type == "multipart/form-data" and _form_prefilled(openapi, media):
                continue
            if example is None:
                problems.append(f"{where} ({media_type}): no example")
            elif media_type == "application/json":
                # The components ride along so that the schema's $refs resolve.
                schema = media["schema"] | {"components": openapi["components"]}
                for error in Draft202012Validator(schema).iter_errors(example):
                    problems.append(f"{where}: the example is invalid: {error.message}")
    assert not problems, "\n".join(problems)


def test_the_bodyless_exceptions_really_take_no_body(openapi: dict[str, Any]) -> None:
    for method, path in BODYLESS:
        assert "requestBody" not in openapi["paths"][path][method]


def test_the_openai_examples_work_as_sent_by_try_it_out(
    platform: Platform, openapi: dict[str, Any]
) -> None:
    for path in ("/v1/chat/completions", "/v1/embeddings"):
        media = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert media["schema"]["properties"]["model"]["type"] == "string"
        response = platform.post(path, json=media["example"])
        assert response.status_code == 200, response.text
    chat = platform.post(
        "/v1/chat/completions",
        json=openapi["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
            "application/json"
        ]["example"],
    )
    assert chat.json()["choices"][0]["message"]["content"]


def test_a_dataset_is_created_from_either_documented_body(
    platform: Platform, openapi: dict[str, Any]
) -> None:
    content = openapi["paths"]["/api/v1/ml/datasets"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    as_json = platform.post("/api/v1/ml/datasets", json=content["application/json"]["example"])
    assert as_json.status_code == 201, as_json.text
    assert as_json.json()["data"]["row_count"] == 3
    csv = b"sepal_length,species\n5.1,setosa\n7.0,versicolor\n"
    form = content["multipart/form-data"]["example"]
    uploaded = platform.post(
        "/api/v1/ml/datasets", data=form, files={"file": ("iris.csv", csv, "text/csv")}
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["data"]["name"] == "iris-sample"


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_json_body_sent_without_the_json_content_type_says_to_send_it(
    platform: Platform, content_type: str | None
) -> None:
    # `curl -d '{...}'` without -H sends application/x-www-form-urlencoded; httpx's
    # `content=` and curl's `--data-binary` with -H "Content-Type:" send none.
    body = b'{"key": "greeting", "value": "hello"}'
    headers = {"Content-Type": content_type} if content_type else {}
    response = platform.post("/api/v1/cache", content=body, headers=headers)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["message"] == "the body must be JSON: send Content-Type: application/json"
    assert error["details"] == {"field": "body", "content_type": content_type}


def test_a_content_type_no_codec_reads_says_to_send_json(platform: Platform) -> None:
    body = b'{"key": "greeting", "value": "hello"}'
    response = platform.post("/api/v1/cache", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415, response.text
    assert response.json()["error"]["message"] == (
        "unsupported Content-Type 'text/plain': send Content-Type: application/json"
        " (accepted: application/json, application/vnd.msgpack, application/protobuf)"
    )


def test_the_same_body_with_the_json_content_type_is_stored(platform: Platform) -> None:
    body = b'{"key": "greeting", "value": "hello"}'
    headers = {"Content-Type": "application/json"}
    response = platform.post("/api/v1/cache", content=body, headers=headers)
    assert response.status_code in (200, 201), response.text


def test_a_wrong_json_body_still_names_the_field(platform: Platform) -> None:
    response = platform.post("/api/v1/cache", json={"value": "hello"})
    assert response.status_code == 422
    assert "key" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
def test_an_unknown_model_on_the_openai_routes_lists_the_known_ones(
    platform: Platform, path: str
) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "input": "hi"}
    response = platform.post(path, json=body)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["message"] == "unknown model 'gpt-4o'; known models: chat-default, embed-default"
    assert error["param"] == "model"


def test_an_unknown_model_on_the_native_route_lists_them_the_same_way(
    platform: Platform,
) -> None:
    response = platform.post(
        "/api/v1/gateway/generate",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["message"] == "unknown model 'gpt-4o'; known models: chat-default, embed-default"
    assert error["details"]["known_models"] == ["chat-default", "embed-default"]


def test_the_docs_pages_load_their_assets_from_the_app(platform: Platform) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{platform.url}{page}", timeout=10).text
        assert "cdn." not in html and "https://" not in html, html
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            if asset in html:
                served = httpx.get(f"{platform.url}/docs/static/{asset}", timeout=10)
                assert served.status_code == 200 and len(served.content) > 100_000
