"""Input limits sized for each endpoint's job, checked before any work is done.

Embeddings follow OpenAI's: at most 2048 inputs, 8192 tokens each and 300,000 tokens in all.
An 8 MB input used to hold the event loop for 10.7 s (hashed and tokenized inline) and take RSS
from 330 MB to 1.21 GB; now it is refused by its length before anything reads it.
"""

from __future__ import annotations

from faas.services.gateway_service.offload import text_size
from faas.shared.cpu import run_cpu
from faas.shared.exceptions import PayloadTooLarge, ValidationFailed
from faas.shared.tokens import count_tokens

MAX_EMBED_INPUTS = 2048
MAX_EMBED_ITEM_TOKENS = 8192
MAX_EMBED_TOTAL_TOKENS = 300_000
# English averages about 4 characters a cl100k token; more than 8 per allowed token is refused
# by length alone, without tokenizing (only runs of repeated characters pack that densely).
MAX_CHARS_PER_TOKEN = 8
MAX_EMBED_ITEM_CHARS = MAX_EMBED_ITEM_TOKENS * MAX_CHARS_PER_TOKEN
MAX_EMBED_TOTAL_CHARS = MAX_EMBED_TOTAL_TOKENS * MAX_CHARS_PER_TOKEN


def count_item_tokens(texts: list[str]) -> list[int]:
    return [count_tokens(t) for t in texts]


def _bound(text: str) -> int:
    """An upper bound on the tokens of `text`: a token is at least one UTF-8 byte."""
    return len(text) if text.isascii() else len(text.encode())


def _too_large(field: str, message: str, **details: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{field}: {message}", details={"field": field, "param": field, **details}
    )


async def embedding_tokens(texts: list[str], field: str) -> int:
    """The tokens of an embeddings request (cl100k, for admission), or 422/413 naming `field`
    when it is over a limit. Short inputs are not tokenized: they cannot be over."""
    if len(texts) > MAX_EMBED_INPUTS:
        raise ValidationFailed(
            f"{field}: at most {MAX_EMBED_INPUTS} inputs per request",
            details={"field": field, "param": field, "limit": MAX_EMBED_INPUTS},
        )
    for index, text in enumerate(texts):
        if len(text) > MAX_EMBED_ITEM_CHARS:
            raise _too_large(
                field,
                f"input {index} is {len(text)} characters; at most {MAX_EMBED_ITEM_CHARS}",
                index=index,
                limit=MAX_EMBED_ITEM_CHARS,
            )
    size = text_size(texts)
    if size > MAX_EMBED_TOTAL_CHARS:
        raise _too_large(
            field,
            f"the inputs are {size} characters; at most {MAX_EMBED_TOTAL_CHARS} per request",
            limit=MAX_EMBED_TOTAL_CHARS,
        )
    bounds = [_bound(t) for t in texts]
    if sum(bounds) <= MAX_EMBED_TOTAL_TOKENS and max(bounds) <= MAX_EMBED_ITEM_TOKENS:
        return size // 4 + len(texts)
    counts = await run_cpu(size, count_item_tokens, texts)
    for index, tokens in enumerate(counts):
        if tokens > MAX_EMBED_ITEM_TOKENS:
            raise _too_large(
                field,
                f"input {index} is {tokens} tokens; at most {MAX_EMBED_ITEM_TOKENS}",
                index=index,
                tokens=tokens,
                limit=MAX_EMBED_ITEM_TOKENS,
            )
    total = sum(counts)
    if total > MAX_EMBED_TOTAL_TOKENS:
        raise _too_large(
            field,
            f"the inputs are {total} tokens; at most {MAX_EMBED_TOTAL_TOKENS} per request",
            tokens=total,
            limit=MAX_EMBED_TOTAL_TOKENS,
        )
    return total
