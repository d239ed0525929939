"""The wire models of `/api/v1/teams`: a team inside a tenant, with its members (user ids), caps
and model rules. A caller is in a team when its API key or its JWT (`team` claim) names the team
(by name or id), or when its user id is one of the team's members."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from faas.services.gateway_service.limits import MAX_MODEL_RULES, LevelCaps, Name

MAX_MEMBERS = 1000
MAX_METADATA_BYTES = 4096

TeamName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
]


def _small(value: dict[str, Any]) -> dict[str, Any]:
    if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata must encode to at most {MAX_METADATA_BYTES} bytes")
    return value


class TeamPatch(BaseModel):
    """`PATCH /api/v1/teams/{id}`: the fields given replace the team's (the name stays: keys
    and tokens name the team by it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"members": ["ana"], "allowed_models": ["chat-default"]}]},
    )

    members: list[Name] | None = Field(None, max_length=MAX_MEMBERS)
    limits: LevelCaps | None = None
    allowed_models: list[Name] | None = Field(None, max_length=MAX_MODEL_RULES)
    denied_models: list[Name] | None = Field(None, max_length=MAX_MODEL_RULES)
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _small(value)


class NewTeam(BaseModel):
    """`POST /api/v1/teams`; `allowed_models` None allows every model the tenant allows."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "research",
                    "members": ["alice"],
                    "limits": {"rpm": 120, "monthly_budget_usd": 50.0},
                    "denied_models": ["o1"],
                }
            ]
        },
    )

    name: TeamName
    members: list[Name] = Field(default_factory=list, max_length=MAX_MEMBERS)
    limits: LevelCaps = Field(default_factory=LevelCaps)
    allowed_models: list[Name] | None = Field(None, max_length=MAX_MODEL_RULES)
    denied_models: list[Name] = Field(default_factory=list, max_length=MAX_MODEL_RULES)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _small(value)


class TeamView(BaseModel):
    id: str
    name: str
    members: list[str]
    limits: LevelCaps
    allowed_models: list[str] | None
    denied_models: list[str]
    metadata: dict[str, Any]
    created_by: str | None
    created_at: datetime
    updated_at: datetime
