"""Who may manage keys, and what a key may be given: never more than its creator holds."""

from __future__ import annotations

from collections.abc import Iterable

from faas.shared.context import PLATFORM_PREFIX, Identity
from faas.shared.exceptions import Forbidden

KEYS_READ = "keys:read"
KEYS_WRITE = "keys:write"


def require_read(identity: Identity) -> None:
    """Listing and reading keys: `keys:read`, `keys:write` or `admin`."""
    if not (identity.has_scope(KEYS_READ) or identity.has_scope(KEYS_WRITE)):
        raise Forbidden(f"managing API keys needs the '{KEYS_READ}' scope (or '{KEYS_WRITE}')")


def require_write(identity: Identity) -> None:
    """Creating, rotating and revoking keys: `keys:write` or `admin`."""
    if not identity.has_scope(KEYS_WRITE):
        raise Forbidden(f"managing API keys needs the '{KEYS_WRITE}' scope")


def granted_scopes(identity: Identity, scopes: Iterable[str]) -> list[str]:
    """`scopes`, if the caller holds every one of them (platform scopes are never granted)."""
    wanted = sorted(set(scopes))
    platform = [s for s in wanted if s.startswith(PLATFORM_PREFIX)]
    if platform:
        raise Forbidden(
            f"{', '.join(platform)} cannot be given to an API key",
            details={"scopes": platform},
        )
    missing = [s for s in wanted if not identity.has_scope(s)]
    if missing:
        raise Forbidden(
            f"an API key cannot be given scopes its creator lacks: {', '.join(missing)}",
            details={"scopes": missing},
        )
    return wanted


def granted_models(identity: Identity, models: Iterable[str] | None) -> list[str] | None:
    """The models a new key may call: those asked for, within what the caller may call (a
    caller limited to some models makes keys limited to them at most)."""
    if models is None:
        return None if identity.models is None else sorted(identity.models)
    wanted = sorted(set(models))
    if identity.models is not None:
        extra = [m for m in wanted if m not in identity.models]
        if extra:
            raise Forbidden(
                f"an API key cannot be given models its creator may not call: {', '.join(extra)}",
                details={"models": extra},
            )
    return wanted


def check_may_hand_over(
    identity: Identity, scopes: Iterable[str], models: list[str] | None
) -> None:
    """Rotating a key hands its new material to the caller: who could not have created the
    key may not rotate it."""
    granted_scopes(identity, scopes)
    if identity.models is not None and (models is None or not identity.models.issuperset(models)):
        raise Forbidden("this API key may call models its rotator may not: it cannot rotate it")
