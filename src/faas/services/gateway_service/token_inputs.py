"""OpenAI's input shapes beyond text: `input` (embeddings) and `prompt` (completions) may be a
string, a list of strings, one list of token ids or a list of them. Token ids are cl100k's —
what OpenAI's clients produce (LangChain's `OpenAIEmbeddings` sends them by default) — and are
decoded to text here, since every provider behind the gateway takes text.

The id counts are checked against the embeddings limits before anything is decoded."""

from __future__ import annotations

from typing import Any

from faas.services.gateway_service.inputs import (
    MAX_EMBED_INPUTS,
    MAX_EMBED_ITEM_TOKENS,
    MAX_EMBED_TOTAL_TOKENS,
)
from faas.shared import tokens
from faas.shared.cpu import run_cpu
from faas.shared.exceptions import PayloadTooLarge, ValidationFailed

# A token id costs about 6 characters of JSON: the unit run_cpu decides by.
_ID_CHARS = 6


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details={"field": field, "param": field})


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    )


def classify(value: Any, field: str) -> tuple[list[str], list[list[int]]]:
    """The inputs as texts, or else as token-id lists (not yet decoded); 422 for any other
    shape."""
    if isinstance(value, str):
        return [value], []
    if not isinstance(value, list) or not value:
        raise _invalid(field, "must be a string, a list of strings or token ids, non-empty")
    if all(isinstance(item, str) for item in value):
        return list(value), []
    if _is_ids(value):
        return [], [list(value)]
    if all(_is_ids(item) and item for item in value):
        return [], [list(item) for item in value]
    raise _invalid(
        field, "must be a string, a list of strings, a list of token ids or a list of such lists"
    )


def _check_ids(batches: list[list[int]], field: str) -> None:
    if len(batches) > MAX_EMBED_INPUTS:
        raise _invalid(field, f"at most {MAX_EMBED_INPUTS} inputs per request")
    total = 0
    for index, ids in enumerate(batches):
        if len(ids) > MAX_EMBED_ITEM_TOKENS:
            raise PayloadTooLarge(
                f"{field}: input {index} is {len(ids)} tokens; at most {MAX_EMBED_ITEM_TOKENS}",
                details={"field": field, "param": field, "index": index},
            )
        total += len(ids)
    if total > MAX_EMBED_TOTAL_TOKENS:
        raise PayloadTooLarge(
            f"{field}: the inputs are {total} tokens; at most {MAX_EMBED_TOTAL_TOKENS}",
            details={"field": field, "param": field},
        )


def decode_ids(batches: list[list[int]], field: str) -> list[str]:
    """cl100k token ids back to text; an id the encoding does not have is the caller's error."""
    encoding = tokens.encoding()
    texts = []
    for index, ids in enumerate(batches):
        try:
            texts.append(encoding.decode(ids, errors="replace"))
        except (KeyError, OverflowError, ValueError) as exc:
            raise _invalid(
                field, f"input {index} holds a token id cl100k_base does not have"
            ) from exc
    return texts


async def input_texts(value: Any, field: str) -> list[str]:
    """Any of OpenAI's input shapes as a list of texts."""
    texts, _ = await embedding_inputs(value, field)
    return texts


async def embedding_inputs(value: Any, field: str) -> tuple[list[str], list[list[int]] | None]:
    """Any of OpenAI's input shapes as texts, and the token ids as sent when they were ids
    (a deployment with `token_ids: pass` gets those; every other one the decoded text)."""
    texts, batches = classify(value, field)
    if not batches:
        return texts, None
    _check_ids(batches, field)
    size = _ID_CHARS * sum(len(ids) for ids in batches)
    return await run_cpu(size, decode_ids, batches, field), batches
