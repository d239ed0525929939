"""Wire models of the prompt service."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faas.services.prompt_service.templates import MAX_TEMPLATE_CHARS
from faas.shared.input_rules import MAX_DB_INT

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DEFAULT_LABEL = "production"
# A virtual label: always the newest version; it cannot be moved.
LATEST = "latest"
MAX_MESSAGES = 4096


class TemplateCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "greet",
                    "content": "Hello {{ name }}, welcome to {{ product }}!",
                    "description": "A greeting",
                    "labels": ["production"],
                }
            ]
        }
    )

    name: str = Field(pattern=NAME_PATTERN)
    content: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    variables_schema: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=2000)
    labels: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="labels to point at the new version (e.g. ['production'])",
    )

    @model_validator(mode="after")
    def _labels(self) -> TemplateCreate:
        self.labels = list(dict.fromkeys(self.labels))
        for label in self.labels:
            _check_label(label)
        return self


def _check_label(label: str) -> None:
    if not re.fullmatch(LABEL_PATTERN, label):
        raise ValueError(f"label {label!r} must match {LABEL_PATTERN}")
    if label == LATEST:
        raise ValueError("'latest' always names the newest version and cannot be set")


class LabelMove(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"label": "production", "version": 1}]}
    )

    label: str
    version: int = Field(ge=1, le=MAX_DB_INT)

    @model_validator(mode="after")
    def _valid(self) -> LabelMove:
        _check_label(self.label)
        return self


class LabelView(BaseModel):
    name: str
    label: str
    version: int


class TemplateView(BaseModel):
    name: str
    version: int
    content: str
    variables_schema: dict[str, Any] | None
    labels: list[str]
    description: str
    created_by: str | None
    created_at: datetime


class TemplateSummary(BaseModel):
    name: str
    description: str
    latest_version: int
    labels: dict[str, int]
    created_at: datetime
    updated_at: datetime


class VersionView(BaseModel):
    version: int
    labels: list[str]
    chars: int
    variables_schema: dict[str, Any] | None
    created_by: str | None
    created_at: datetime


class RenderRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "greet",
                    "label": "production",
                    "variables": {"name": "Ada", "product": "faas"},
                }
            ]
        }
    )

    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1, le=MAX_DB_INT)
    label: str | None = Field(None, pattern=LABEL_PATTERN)
    variables: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_selector(self) -> RenderRequest:
        if self.version is not None and self.label is not None:
            raise ValueError("give version or label, not both")
        return self


class RenderResponse(BaseModel):
    rendered: str
    name: str
    version: int
    variables_used: list[str]
    cached: bool = False


class ChatMessage(BaseModel):
    """An OpenAI-style chat message; other fields (tool_calls, tool_call_id, name) are kept
    and counted."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ContextRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "messages": [
                        {"role": "user", "content": "What is a semantic cache?"},
                        {
                            "role": "assistant",
                            "content": "A cache keyed by meaning rather than exact text.",
                        },
                        {"role": "user", "content": "When does it help?"},
                    ],
                    "system_prompt": "You are concise.",
                    "max_tokens": 1000,
                    "strategy": "truncate",
                }
            ]
        }
    )

    messages: list[ChatMessage] = Field(max_length=MAX_MESSAGES)
    system_prompt: str | None = Field(None, max_length=2_000_000)
    max_tokens: int = Field(ge=1, le=10_000_000)
    strategy: Literal["truncate", "summarize"] = "truncate"
    model: str | None = Field(None, description="the gateway model that writes summaries")


class ContextResponse(BaseModel):
    messages: list[dict[str, Any]]
    token_count: int = Field(description="cl100k chat tokens of `messages` (count_chat_tokens)")
    dropped: int = Field(description="messages of the input no longer present verbatim")
    summarized: bool
    note: str | None = None
