"""Job kinds (`{service}.{name}`), their handlers, and which of them callers may submit directly
over `POST /api/v1/jobs:batch`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from faas.shared.exceptions import ValidationFailed

if TYPE_CHECKING:
    from faas.jobs.queue import JobContext

KIND_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$")

JobHandler = Callable[["JobContext"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class RegisteredKind:
    kind: str
    service: str
    handler: JobHandler
    # The payload a caller may submit this kind with over the API; None: only the owning
    # service submits it (after its own checks), never a caller directly.
    accepts: type[BaseModel] | None = None


@dataclass
class JobRegistry:
    """Registered by services at build time; read by the queue and the workers."""

    kinds: dict[str, RegisteredKind] = field(default_factory=dict)

    def register(
        self, kind: str, handler: JobHandler, *, accepts: type[BaseModel] | None = None
    ) -> None:
        """Add a kind. With `accepts`, callers may submit it directly through the batch
        endpoint, with a payload that this model validates: its handler must then treat the
        payload as caller input, bounded by the job's tenant."""
        if not KIND_RE.match(kind):
            raise ValueError(f"job kind {kind!r} must look like 'service.name'")
        if kind in self.kinds:
            raise ValueError(f"job kind {kind!r} is already registered")
        self.kinds[kind] = RegisteredKind(kind, kind.split(".", 1)[0], handler, accepts)

    def get(self, kind: str) -> RegisteredKind:
        try:
            return self.kinds[kind]
        except KeyError:
            raise ValidationFailed(
                f"unknown job kind {kind!r}", details={"known": sorted(self.kinds)}
            ) from None

    def caller_payload(self, kind: str, payload: dict[str, Any], index: int) -> dict[str, Any]:
        """The payload of job number `index` of a caller's batch, validated (and normalised)
        by its kind's `accepts` model; ValidationFailed for a kind callers may not submit."""
        accepts = self.kinds[kind].accepts if kind in self.kinds else None
        if accepts is None:
            open_kinds = sorted(k for k, r in self.kinds.items() if r.accepts is not None)
            raise ValidationFailed(
                f"job kind {kind!r} cannot be submitted directly",
                details={"submittable": open_kinds},
            )
        try:
            return accepts.model_validate(payload).model_dump(mode="json")
        except ValueError as exc:
            raise ValidationFailed(
                f"jobs[{index}]: invalid payload for {kind}", details={"index": index}
            ) from exc
