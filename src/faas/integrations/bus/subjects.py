"""NATS subject rules and the names the bus derives from a deployment prefix; the in-process
bus follows the same rules so that a subject valid in tests is valid on a server."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")


def check_subject(subject: str, *, wildcards: bool = False) -> None:
    """Raise ValueError unless `subject` is a valid NATS subject (or pattern, with `wildcards`).
    Every event is published on a subject checked before: the valid ones are remembered (a
    bounded cache; a refusal is never cached), which takes a check from ~2.8 us to ~0.2."""
    _checked(subject, wildcards)


@lru_cache(maxsize=4096)
def _checked(subject: str, wildcards: bool) -> None:
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token or any(c.isspace() for c in token):
            raise ValueError(f"invalid subject {subject!r}")
        if token in ("*", ">"):
            if not wildcards:
                raise ValueError(f"wildcards are not allowed here: {subject!r}")
            if token == ">" and i != len(tokens) - 1:
                raise ValueError(f"'>' must be the last token: {subject!r}")
        elif "*" in token or ">" in token:
            raise ValueError(f"invalid subject {subject!r}")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: `*` matches one token, a final `>` one or more."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens) or (token != "*" and token != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


def subject_root(subject: str) -> str:
    """The first token, which labels the bus metrics."""
    return subject.split(".", 1)[0]


def job_subject(kind: str) -> str:
    return f"jobs.{kind}"


def dlq_subject(kind: str) -> str:
    return f"dlq.{kind}"


def safe_name(value: str) -> str:
    """`value` reduced to [A-Za-z0-9_-], as JetStream stream and consumer names need."""
    return _NAME_UNSAFE.sub("_", value)


def stream_names(prefix: str) -> tuple[str, str]:
    """The (jobs, dead letters) stream names of a deployment prefix."""
    return event_stream_name(prefix, "jobs"), event_stream_name(prefix, "dlq")


def event_stream_name(prefix: str, stream: str) -> str:
    """The JetStream name of stream `stream` (e.g. "usage") under a deployment prefix."""
    root = safe_name(prefix).upper() if prefix else "FAAS"
    return f"{root}_{safe_name(stream).upper()}"


class Prefixer:
    """Adds the deployment prefix to subjects on the wire and strips it from delivered ones."""

    def __init__(self, prefix: str) -> None:
        prefix = prefix.strip().strip(".")
        if prefix:
            check_subject(prefix)
        self.prefix = prefix

    def wire(self, subject: str) -> str:
        return f"{self.prefix}.{subject}" if self.prefix else subject

    def local(self, wire_subject: str) -> str:
        if self.prefix and wire_subject.startswith(self.prefix + "."):
            return wire_subject[len(self.prefix) + 1 :]
        return wire_subject
