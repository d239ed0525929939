"""The default templates every tenant starts with, and seeding them on a tenant's first use.

A tenant's own versions and label moves of a default are kept; a deleted default comes back,
as shipped, on the tenant's next request."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from faas.services.prompt_service.models import DEFAULT_LABEL
from faas.services.prompt_service.tables import (
    PromptLabelRow,
    PromptTemplateRow,
    PromptVersionRow,
)
from faas.shared.clock import utcnow
from faas.shared.context import new_id
from faas.shared.database import Database, TenantRepository

log = logging.getLogger("faas.prompt")


@dataclass(frozen=True)
class DefaultTemplate:
    name: str
    description: str
    content: str
    variables_schema: dict[str, Any]


_SOURCE_ITEM = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 1},
        "title": {"type": "string"},
        "text": {"type": "string"},
    },
    "required": ["n", "title", "text"],
}

_MESSAGE_ITEM = {
    "type": "object",
    "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
    "required": ["role", "content"],
}

DEFAULT_TEMPLATES: tuple[DefaultTemplate, ...] = (
    DefaultTemplate(
        name="rag.answer",
        description="Grounded answer from numbered sources, citing them as [n]",
        content=(
            "Answer the question using only the numbered sources below. Cite every claim with "
            "the number of its source in square brackets, like [1] or [2][3]. If the sources "
            "do not contain the answer, say that you could not find it in the documents; do "
            "not make anything up.\n"
            "\n"
            "Sources:\n"
            "{% for source in sources %}"
            "[{{ source.n }}] {{ source.title }}\n"
            "{{ source.text }}\n"
            "\n"
            "{% endfor %}"
            "Question: {{ question }}\n"
            "Answer:"
        ),
        variables_schema={
            "type": "object",
            "properties": {
                "question": {"type": "string", "minLength": 1},
                "sources": {"type": "array", "items": _SOURCE_ITEM},
            },
            "required": ["question", "sources"],
        },
    ),
    DefaultTemplate(
        name="agent.system",
        description="System prompt of a tool-using agent",
        content=(
            "You are {{ agent_name | default('a helpful assistant') }}. Work step by step and "
            "be concise.\n"
            "{% if instructions is defined %}\n{{ instructions }}\n{% endif %}"
            "{% if tools is defined and tools %}\n"
            "You can call these tools. Call a tool when it helps answer the request; never "
            "invent a tool's result.\n"
            "{% for tool in tools %}- {{ tool.name }}: {{ tool.description }}\n{% endfor %}"
            "{% endif %}"
            "\nIf you do not know the answer, say so instead of guessing."
        ),
        variables_schema={
            "type": "object",
            "properties": {
                "agent_name": {"type": "string"},
                "instructions": {"type": "string"},
                "tools": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "description": {"type": "string"},
                        },
                        "required": ["name", "description"],
                    },
                },
            },
        },
    ),
    DefaultTemplate(
        name="agent.summarize_memory",
        description="Summary of earlier conversation turns that replaces them in memory",
        content=(
            "Summarize the conversation below so that the summary can replace it in an "
            "assistant's memory. Keep facts, names, numbers, decisions, open questions and the "
            "user's preferences; leave out small talk. Write at most "
            "{{ max_words | default(150) }} words, in the third person, without a preamble.\n"
            "\n"
            "Conversation:\n"
            "{% for message in messages %}{{ message.role }}: {{ message.content }}\n"
            "{% endfor %}"
            "\nSummary:"
        ),
        variables_schema={
            "type": "object",
            "properties": {
                "messages": {"type": "array", "items": _MESSAGE_ITEM},
                "max_words": {"type": "integer", "minimum": 10, "maximum": 2000},
            },
            "required": ["messages"],
        },
    ),
)

DEFAULT_NAMES = frozenset(t.name for t in DEFAULT_TEMPLATES)


class TenantDefaults:
    """Creates the default templates of a tenant once per process (idempotent; concurrent
    creators across processes are settled by the unique (tenant, name) constraint)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._seeded: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure(self, tenant: str) -> None:
        if tenant in self._seeded:
            return
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            if tenant in self._seeded:
                return
            for default in DEFAULT_TEMPLATES:
                try:
                    await self._create(tenant, default)
                except IntegrityError:
                    log.debug("default prompt %s of %s created concurrently", default.name, tenant)
            self._seeded.add(tenant)
            self._locks.pop(tenant, None)

    def deleted(self, tenant: str, name: str) -> None:
        """A deleted default is seeded again on the tenant's next request."""
        if name in DEFAULT_NAMES:
            self._seeded.discard(tenant)

    async def _create(self, tenant: str, default: DefaultTemplate) -> None:
        async with self.db.session() as session:
            repo = TenantRepository(session, PromptTemplateRow, tenant)
            if await session.scalar(repo.select(PromptTemplateRow.name == default.name)):
                return
            now = utcnow()
            row = repo.add(
                id=new_id(), name=default.name, description=default.description, created_at=now
            )
            await session.flush()
            TenantRepository(session, PromptVersionRow, tenant).add(
                id=new_id(),
                template_id=row.id,
                version=1,
                content=default.content,
                variables_schema=default.variables_schema,
                created_by=None,
                created_at=now,
            )
            TenantRepository(session, PromptLabelRow, tenant).add(
                template_id=row.id, label=DEFAULT_LABEL, version=1, updated_at=now
            )
            await session.flush()
