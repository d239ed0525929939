"""Pure retrieval and answering helpers: MMR, prompt, citations, grounding."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD_RE = re.compile(r"[A-Za-z0-9]+")
_CITE_RE = re.compile(r"\[(\d{1,3})\]")
_CITES_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\d{1,3}\])+)")
# An answer sentence that cites no retrieved source counts for this share of its lexical
# support: words found in the sources do not make an uncited answer grounded (SmolLM2 looping
# on the question without a single [n] scored 0.996 when they did).
UNCITED_WEIGHT = 0.3
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "which",
        "who",
        "what",
        "when",
        "where",
        "how",
        "not",
        "no",
        "but",
        "if",
        "then",
        "than",
        "so",
        "such",
        "can",
    }
)

BUILT_IN_TEMPLATE = """Answer the question using only the numbered sources below. Cite every
claim with the number of its source in square brackets, like [1] or [2][3]. If the sources do
not contain the answer, say that you do not know.

Sources:
{sources}

Question: {question}
Answer:"""

REWRITE_TEMPLATE = """Rewrite the user's question as one short search query for a document
search engine. Keep names, numbers and key terms. Reply with the query only.

Question: {question}
Query:"""


def mmr(query: np.ndarray, candidates: np.ndarray, k: int, lambda_: float = 0.7) -> list[int]:
    """Maximal marginal relevance: indices of `k` candidates balancing relevance to the query
    against similarity to those already chosen (vectors L2-normalised)."""
    if len(candidates) == 0:
        return []
    relevance = candidates @ query
    chosen: list[int] = [int(np.argmax(relevance))]
    similarity = candidates @ candidates.T
    while len(chosen) < min(k, len(candidates)):
        redundancy = similarity[:, chosen].max(axis=1)
        score = lambda_ * relevance - (1 - lambda_) * redundancy
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return chosen


def build_prompt(question: str, passages: Sequence[tuple[int, str, str]]) -> str:
    """passages: (n, title, text)."""
    sources = "\n\n".join(f"[{n}] {title}\n{text}" for n, title, text in passages)
    return BUILT_IN_TEMPLATE.format(sources=sources, question=question)


def cited_numbers(answer: str) -> set[int]:
    return {int(m) for m in _CITE_RE.findall(answer)}


def sentences(text: str) -> list[str]:
    """The sentences of at least three words; citations after a full stop ("... return. [1]")
    belong to the sentence before them."""
    text = _CITES_AFTER_STOP.sub(r"\2\1", text.strip())
    parts = [p.strip() for p in _SENTENCE_RE.split(text)]
    return [p for p in parts if len(_WORD_RE.findall(p)) >= 3]


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD_RE.findall(text)) if w not in STOPWORDS}


def sentence_support(sentence: str, passages: Sequence[str]) -> float:
    """The share of the sentence's content words found in its best-matching passage: a
    lexical grounding score (0..1) that needs no model call and is easy to explain."""
    words = content_words(_CITE_RE.sub(" ", sentence))
    if not words:
        return 1.0
    return max((len(words & content_words(p)) / len(words) for p in passages), default=0.0)


def cited_support(sentence: str, passages: Sequence[str]) -> float:
    """How well the sources a sentence cites (`[n]`, 1-based into `passages`) support it: the
    share of its content words found in them together. A sentence citing none of them scores
    UNCITED_WEIGHT of its support by the best passage."""
    cited = sorted(n for n in cited_numbers(sentence) if 1 <= n <= len(passages))
    if cited:
        return sentence_support(sentence, [" ".join(passages[n - 1] for n in cited)])
    return UNCITED_WEIGHT * sentence_support(sentence, passages)


def answer_confidence(supports: Sequence[tuple[str, float]]) -> float:
    """The mean support of the answer's sentences, scaled by the share of distinct ones: an
    answer repeating itself is no better grounded for it. 0.0 for an answer without sentences."""
    if not supports:
        return 0.0
    distinct = len({" ".join(sorted(content_words(s))) for s, _ in supports}) / len(supports)
    return sum(v for _, v in supports) / len(supports) * distinct
