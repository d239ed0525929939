"""Wire models of the cache service (its public contract)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

KEY_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,256}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9._:@*?-]{1,256}$")
RESERVED_KEYS = frozenset({"stats", "mget", "mset", "invalidate"})
MAX_TTL_S = 30 * 24 * 3600
MAX_BATCH = 1000


def check_key(value: str) -> str:
    if not KEY_RE.match(value):
        raise ValueError("key must be 1-256 characters of letters, digits and . _ : @ -")
    if value in RESERVED_KEYS:
        raise ValueError(f"'{value}' is a reserved name (a route of this API)")
    return value


def check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits and _ . -")
    return value


def check_pattern(value: str) -> str:
    if not PATTERN_RE.match(value):
        raise ValueError("pattern may use key characters and the wildcards * and ?")
    return value


Key = Annotated[str, AfterValidator(check_key)]
Name = Annotated[str, AfterValidator(check_name)]
Pattern = Annotated[str, AfterValidator(check_pattern)]
TtlSeconds = Annotated[float, Field(gt=0, le=MAX_TTL_S)]


class CacheSetRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"key": "greeting", "value": {"text": "hello"}, "ttl_s": 300, "tags": ["demo"]}
            ]
        }
    )

    key: Key
    value: Any
    ttl_s: TtlSeconds | None = None
    namespace: Name = "default"
    tags: list[Name] = Field(default_factory=list, max_length=32)


class CacheItem(BaseModel):
    key: Key
    value: Any
    ttl_s: TtlSeconds | None = None
    tags: list[Name] = Field(default_factory=list, max_length=32)


class CacheMSetRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"key": "greeting", "value": "hello"},
                        {"key": "farewell", "value": "bye", "ttl_s": 60},
                    ]
                }
            ]
        }
    )

    items: list[CacheItem] = Field(min_length=1, max_length=MAX_BATCH)
    namespace: Name = "default"


class CacheMGetRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"keys": ["greeting", "farewell"]}]})

    keys: list[Key] = Field(min_length=1, max_length=MAX_BATCH)
    namespace: Name = "default"


class CacheInvalidateRequest(BaseModel):
    """Remove keys by glob pattern (within one namespace) and/or by tag, in the caller's tenant."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"tags": ["demo"]}]})

    pattern: Pattern | None = None
    tags: list[Name] | None = Field(default=None, max_length=32)
    namespace: Name = "default"

    @model_validator(mode="after")
    def _needs_a_selector(self) -> CacheInvalidateRequest:
        if self.pattern is None and not self.tags:
            raise ValueError("give a pattern, tags, or both")
        return self


class CacheEntry(BaseModel):
    key: str
    namespace: str
    found: bool
    value: Any = None
    ttl_remaining_s: float | None = None


class CacheStored(BaseModel):
    key: str
    namespace: str
    bytes: int
    ttl_s: float | None


class CacheBatchStored(BaseModel):
    stored: int
    namespace: str


class CacheEntries(BaseModel):
    entries: list[CacheEntry]


class CacheRemoved(BaseModel):
    removed: int


class CacheStats(BaseModel):
    tenant_id: str
    hits: int
    misses: int
    hit_rate: float
    keys: int
    bytes: int


class CacheInvalidated(BaseModel):
    """The body of `cache.invalidated.{tenant}` after an invalidation by pattern and/or tags,
    for replicas and caches layered on this one to drop what they hold."""

    namespace: str
    pattern: str | None
    tags: list[str]
    removed: int = Field(description="keys deleted")


class CacheCleared(BaseModel):
    """The body of `cache.invalidated.{tenant}` after the tenant's whole cache was cleared."""

    all: Literal[True] = True
    removed: int = Field(description="keys deleted")
