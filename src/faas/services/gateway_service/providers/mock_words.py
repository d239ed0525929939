"""The mock model's reading of text: content words, sentences, and the sentence that shares most
words with a question — the one rule behind its tool choice, cited answers and tool summaries."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

# Enough for any RAG prompt; bounds the work on a huge message.
READ_CHARS = 100_000

WORD_RE = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    {
        *("a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "did", "do", "does"),
        *("for", "from", "had", "has", "have", "how", "i", "if", "in", "is", "it", "its", "me"),
        *("my", "of", "on", "or", "our", "please", "should", "so", "that", "the", "their"),
        *("them", "then", "there", "these", "this", "to", "tell", "us", "was", "we", "were"),
        *("what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your"),
    }
)


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(p.get("text", "")) for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if p)
    return ""


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def words(text: str) -> set[str]:
    """Lower-cased content words, a trailing plural "s" dropped ("refunds" meets "refund")."""
    found = WORD_RE.findall(text[:READ_CHARS].lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in found if w not in _STOPWORDS}


def sentences(text: str) -> Iterator[str]:
    for line in text.splitlines():
        for part in _SENTENCE_END.split(line.strip().lstrip("#>*- ").strip()):
            if part:
                yield part


def best_sentence(question: str, texts: list[str]) -> tuple[int, str] | None:
    """(index of the text, its sentence sharing most words with the question), or None when no
    sentence shares any. Ties go to the longer sentence (a heading loses to a statement), then
    to the earlier one."""
    asked = words(question)
    best: tuple[int, int, int, str] | None = None  # (shared, words, -index, sentence)
    for index, text in enumerate(texts):
        for sentence in sentences(text[:READ_CHARS]):
            found = words(sentence)
            shared = len(asked & found)
            key = (shared, min(len(found), 3), -index, sentence)
            if shared and (best is None or key[:3] > best[:3]):
                best = key
    return None if best is None else (-best[2], best[3])
