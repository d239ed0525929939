"""The API key's wire models: what a caller sends to create one, what every answer shows, and
the event that tells every replica a key stopped working."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from faas.backends.limits import MAX_BUDGET_USD, MAX_RATE

MAX_METADATA_BYTES = 4096
MAX_SCOPES = 64
MAX_MODELS = 256

Label = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
Scope = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:*-]+$")
]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class NewKey(BaseModel):
    """`POST /api/v1/keys`. `budget_usd`, `rpm` and `tpm` are recorded with the key for the
    per-key limits of the gateway's multi-level admission; `models` None allows every model."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "support-bot", "team": "support", "models": ["chat-default"], "rpm": 60}
            ]
        },
    )

    name: Label
    user: Label | None = None
    team: Label | None = None
    scopes: list[Scope] = Field(default_factory=list, max_length=MAX_SCOPES)
    models: list[ModelName] | None = Field(None, max_length=MAX_MODELS)
    expires_at: AwareDatetime | None = None
    budget_usd: float | None = Field(None, ge=0, le=MAX_BUDGET_USD)
    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(None, ge=1, le=MAX_RATE)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must encode to at most {MAX_METADATA_BYTES} bytes")
        return value


class KeyView(BaseModel):
    """A key as every answer shows it: never the key itself nor its hash, only `prefix`."""

    id: str
    prefix: str
    name: str
    user: str | None
    team: str | None
    scopes: list[str]
    models: list[str] | None
    expires_at: datetime | None
    budget_usd: float | None
    rpm: int | None
    tpm: int | None
    metadata: dict[str, Any]
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyView):
    """The answer of create and rotate: the only time the key is ever shown."""

    key: str


class KeyRevoked(BaseModel):
    """Event `keys.revoked.{tenant}`: the key stopped working (deleted or rotated); every
    replica drops it from its cache at once."""

    key_id: str
    reason: str
