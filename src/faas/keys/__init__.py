"""API keys (`fk-…`): opaque keys a tenant hands out, stored as hashes, resolved into the same
`Identity` a JWT carries, revoked on every replica at once. A platform component (like
`faas.jobs`): the runtime builds it, the token verifier uses its resolver, every app serves
its routes."""

from faas.keys.models import KeyCreated, KeyRevoked, KeyView, NewKey
from faas.keys.resolver import CachedKeyResolver
from faas.keys.service import ApiKeys

__all__ = ["ApiKeys", "CachedKeyResolver", "KeyCreated", "KeyRevoked", "KeyView", "NewKey"]
