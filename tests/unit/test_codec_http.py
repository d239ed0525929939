"""CodecMiddleware: handlers speak JSON, clients speak JSON, MessagePack or Protobuf."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import orjson
import pytest
from fastapi import FastAPI, Form
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faas.app_errors import install_error_handlers
from faas.integrations.codec import PROTOBUF_BODY, PROTOBUF_ENVELOPE, ProtobufCodec
from faas.integrations.codec_http import CodecMiddleware, make_error_renderer
from faas.integrations.proto import faas_pb2 as pb
from faas.shared.api import respond
from faas.shared.contracts import ServiceResponse
from faas.shared.exceptions import NotFound
from faas.shared.middleware import RequestContextMiddleware

MSGPACK = "application/vnd.msgpack"
PROTOBUF = "application/protobuf"
FIXED = orjson.dumps({"fixed": [1, 2.5, "é", None]})


class Item(BaseModel):
    name: str
    qty: int
    tags: list[str] = []


class Spy:
    """Records what the app behind the middleware was given."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: list[tuple[list[tuple[bytes, bytes]], bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if not message.get("more_body"):
                break
        body = b"".join(m.get("body", b"") for m in messages)
        self.calls.append((list(scope["headers"]), body))
        replay = iter(messages)

        async def replay_receive() -> Message:
            return next(replay, {"type": "http.disconnect"})

        await self.app(scope, replay_receive, send)


def build_api() -> FastAPI:
    api = FastAPI()
    install_error_handlers(api)

    @api.post("/api/v1/items", status_code=201)
    async def create_item(item: Item) -> Response:
        return respond(item.model_dump(), status_code=201, message="created")

    @api.get("/api/v1/missing")
    async def missing() -> Response:
        raise NotFound("no such item", details={"name": "x"})

    @api.get("/api/v1/plain")
    async def plain() -> dict[str, Any]:
        return {"not": "an envelope"}

    @api.post("/api/v1/raw")
    async def raw(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    @api.get("/api/v1/fixed")
    async def fixed() -> Response:
        return Response(FIXED, media_type="application/json")

    @api.get("/api/v1/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            yield b"data: two\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.post("/api/v1/upload")
    async def upload(name: str = Form()) -> Response:
        return respond({"name": name})

    @api.get("/other")
    async def other() -> dict[str, str]:
        return {"ok": "yes"}

    return api


@pytest.fixture
def spy() -> Spy:
    return Spy(build_api())


@pytest.fixture
async def client(spy: Spy) -> AsyncIterator[httpx.AsyncClient]:
    app = RequestContextMiddleware(CodecMiddleware(spy, max_body_bytes=2000), log_requests=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://faas.test") as c:
        yield c


def unpack(response: httpx.Response) -> Any:
    return msgpack.unpackb(response.content)


async def test_msgpack_request_is_handled_as_json_and_answered_in_msgpack(
    client: httpx.AsyncClient, spy: Spy
) -> None:
    body = msgpack.packb({"name": "bolt", "qty": 3, "tags": ["m4"]})
    response = await client.post(
        "/api/v1/items",
        content=body,
        headers={"Content-Type": "application/x-msgpack; charset=binary", "Accept": MSGPACK},
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == MSGPACK
    assert int(response.headers["content-length"]) == len(response.content)
    assert "Accept" in response.headers["vary"]
    envelope = unpack(response)
    assert envelope["success"] is True
    assert envelope["data"] == {"name": "bolt", "qty": 3, "tags": ["m4"]}
    assert envelope["message"] == "created"
    assert envelope["request_id"] == response.headers["x-request-id"]
    seen_headers, seen_body = spy.calls[0]
    assert orjson.loads(seen_body) == {"name": "bolt", "qty": 3, "tags": ["m4"]}
    assert (b"content-type", b"application/json") in seen_headers
    assert (b"content-length", str(len(seen_body)).encode()) in seen_headers


async def test_protobuf_request_and_response_round_trip(client: httpx.AsyncClient) -> None:
    body = pb.Body(data=msgpack.packb({"name": "nut", "qty": 7})).SerializeToString()
    response = await client.post(
        "/api/v1/items",
        content=body,
        headers={"Content-Type": "application/x-protobuf", "Accept": PROTOBUF},
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == PROTOBUF_ENVELOPE
    envelope = pb.Envelope.FromString(response.content)
    assert envelope.success is True
    assert envelope.correlation_id == response.headers["x-correlation-id"]
    assert msgpack.unpackb(envelope.data) == {"name": "nut", "qty": 7, "tags": []}
    decoded = ProtobufCodec().decode(response.content, ServiceResponse[Item])
    assert decoded.data == Item(name="nut", qty=7)


async def test_protobuf_error_is_an_envelope_with_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/missing", headers={"Accept": "application/x-protobuf"})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROTOBUF_ENVELOPE
    envelope = pb.Envelope.FromString(response.content)
    assert envelope.success is False
    assert envelope.error.code == "not_found"
    assert envelope.error.message == "no such item"
    assert msgpack.unpackb(envelope.error.details) == {"name": "x"}
    assert envelope.request_id == response.headers["x-request-id"]


async def test_a_non_envelope_json_answer_travels_whole_as_a_protobuf_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/plain", headers={"Accept": PROTOBUF})
    assert response.headers["content-type"] == PROTOBUF_BODY
    assert ProtobufCodec().decode(response.content) == {"not": "an envelope"}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json;q=0.5, application/vnd.msgpack;q=0.9", MSGPACK),
        ("application/vnd.msgpack;q=0.1, application/protobuf;q=0.2", PROTOBUF_ENVELOPE),
        ("application/vnd.msgpack;q=0, */*", "application/json"),
        ("application/json;q=0, */*", MSGPACK),
        ("text/html, application/*;q=0.3", "application/json"),
    ],
)
async def test_accept_q_values_choose_the_codec(
    client: httpx.AsyncClient, accept: str, expected: str
) -> None:
    response = await client.get("/api/v1/missing", headers={"Accept": accept})
    assert response.status_code == 404
    assert response.headers["content-type"] == expected


async def test_unsupported_content_type_is_415_error_response(
    client: httpx.AsyncClient, spy: Spy
) -> None:
    response = await client.post(
        "/api/v1/items", content=b"name=bolt", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "unsupported_media_type"
    assert MSGPACK in body["error"]["details"]["supported"]
    assert body["correlation_id"] == response.headers["x-correlation-id"]
    assert spy.calls == []


async def test_415_is_encoded_in_the_negotiated_codec(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/items",
        content=b"<item/>",
        headers={"Content-Type": "application/xml", "Accept": MSGPACK},
    )
    assert response.status_code == 415
    assert unpack(response)["error"]["code"] == "unsupported_media_type"


async def test_only_text_html_accepted_is_406_as_json(client: httpx.AsyncClient, spy: Spy) -> None:
    response = await client.get("/api/v1/fixed", headers={"Accept": "text/html"})
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "not_acceptable"
    assert body["error"]["details"]["accept"] == "text/html"
    assert spy.calls == []


async def test_garbage_msgpack_is_400_in_the_negotiated_codec(
    client: httpx.AsyncClient, spy: Spy
) -> None:
    response = await client.post(
        "/api/v1/items",
        content=b"\xc1\xc1\xc1",
        headers={"Content-Type": MSGPACK, "Accept": MSGPACK},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == MSGPACK
    assert unpack(response)["error"]["code"] == "undecodable_body"
    assert spy.calls == []


async def test_garbage_protobuf_is_400_envelope(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/items",
        content=b"\xff\xff\xff",
        headers={"Content-Type": PROTOBUF, "Accept": PROTOBUF},
    )
    assert response.status_code == 400
    assert pb.Envelope.FromString(response.content).error.code == "undecodable_body"


async def test_msgpack_without_a_json_form_is_400(client: httpx.AsyncClient) -> None:
    body = msgpack.packb({"name": b"\x00binary", "qty": 1}, use_bin_type=True)
    response = await client.post("/api/v1/items", content=body, headers={"Content-Type": MSGPACK})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "undecodable_body"


async def test_validation_error_comes_back_in_msgpack(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/items",
        content=msgpack.packb({"name": "bolt"}),
        headers={"Content-Type": MSGPACK, "Accept": MSGPACK},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == MSGPACK
    body = unpack(response)
    assert body["success"] is False
    assert body["error"]["code"] == "validation_failed"
    assert body["error"]["details"]["errors"][0]["loc"] == ["body", "qty"]


async def test_raw_body_over_the_limit_is_413_in_the_negotiated_codec(
    client: httpx.AsyncClient, spy: Spy
) -> None:
    body = msgpack.packb({"name": "x" * 3000, "qty": 1})
    response = await client.post(
        "/api/v1/items", content=body, headers={"Content-Type": MSGPACK, "Accept": MSGPACK}
    )
    assert response.status_code == 413
    assert unpack(response)["error"]["details"] == {"max_bytes": 2000}
    assert spy.calls == []


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "application/json;q=0.9"])
async def test_json_path_is_unchanged_byte_for_byte(
    client: httpx.AsyncClient, spy: Spy, accept: str | None
) -> None:
    sent = b'{"b": 1,  "a": [true, null, 1.50]}'
    headers = {"Content-Type": "application/json"}
    if accept is not None:
        headers["Accept"] = accept
    else:
        del client.headers["accept"]
    request = client.build_request("POST", "/api/v1/raw", content=sent, headers=headers)
    response = await client.send(request)
    assert response.status_code == 200
    assert response.content == sent
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept"
    seen_headers, seen_body = spy.calls[0]
    assert seen_body == sent
    assert seen_headers == [(k.lower(), v) for k, v in request.headers.raw]
    fixed = await client.get("/api/v1/fixed", headers=headers)
    assert fixed.content == FIXED


async def test_msgpack_response_of_fixed_json_is_its_msgpack(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/fixed", headers={"Accept": MSGPACK})
    assert response.content == msgpack.packb(orjson.loads(FIXED))


async def test_streaming_responses_are_untouched(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/stream", headers={"Accept": MSGPACK})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b"data: one\n\ndata: two\n\n"


async def test_form_uploads_pass_through(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/upload", data={"name": "doc"}, headers={"Accept": MSGPACK}
    )
    assert response.status_code == 200
    assert unpack(response)["data"] == {"name": "doc"}


async def test_paths_outside_the_prefix_are_untouched(client: httpx.AsyncClient) -> None:
    response = await client.get("/other", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.json() == {"ok": "yes"}
    assert "vary" not in response.headers


@pytest.mark.parametrize(
    ("accept", "path", "expected"),
    [
        (b"application/x-msgpack", "/api/v1/x", MSGPACK),
        (b"text/html", "/api/v1/x", "application/json"),
        (b"application/protobuf", "/api/v1/x", PROTOBUF_ENVELOPE),
        (b"application/x-msgpack", "/livez", "application/json"),
    ],
)
def test_error_renderer_answers_in_the_clients_codec(
    accept: bytes, path: str, expected: str
) -> None:
    from faas.integrations.codec import default_registry

    render = make_error_renderer(default_registry())
    scope = {"type": "http", "path": path, "headers": [(b"accept", accept)]}
    body, content_type = render(scope, NotFound("gone"))
    assert content_type == expected
    if expected == MSGPACK:
        assert msgpack.unpackb(body)["error"]["code"] == "not_found"
