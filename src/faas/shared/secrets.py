"""Sealing secrets at rest: AES-256-GCM under a key ring (FAAS_SECRETS_KEY).

The ring is a comma-separated list of keys: the first seals, every one opens, so a key is
rotated by putting the new one first, re-sealing the stored values, then dropping the old one.
A key is 32 bytes in urlsafe base64 (`python -c "import os,base64;
print(base64.urlsafe_b64encode(os.urandom(32)).decode())"`); any other string is stretched to 32
bytes with SHA-256, so a passphrase also works (with a passphrase's strength).

A sealed value is `version (1) | key id (4) | nonce (12) | ciphertext+tag`; the key id (the
first bytes of the key's SHA-256) says which key of the ring opens it. The caller's `context`
is the associated data: a value copied to another row or tenant does not open."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_KEY_ID = 4
_NONCE = 12
_HEAD = 1 + _KEY_ID + _NONCE


class SealError(Exception):
    """A sealed value that no key of the ring opens (wrong key, tampered or foreign row)."""


def _key_bytes(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    return raw if len(raw) == 32 else hashlib.sha256(text.encode()).digest()


class SecretBox:
    """Seals with the ring's first key, opens with any of them."""

    def __init__(self, ring: str) -> None:
        keys = [k.strip() for k in ring.split(",") if k.strip()]
        if not keys:
            raise ValueError("the secrets key ring is empty")
        self._keys: list[tuple[bytes, AESGCM]] = []
        for text in keys:
            key = _key_bytes(text)
            self._keys.append((hashlib.sha256(key).digest()[:_KEY_ID], AESGCM(key)))

    @property
    def primary_id(self) -> bytes:
        return self._keys[0][0]

    def seal(self, plain: bytes, context: bytes) -> bytes:
        key_id, aead = self._keys[0]
        nonce = os.urandom(_NONCE)
        return _VERSION + key_id + nonce + aead.encrypt(nonce, plain, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) <= _HEAD or sealed[:1] != _VERSION:
            raise SealError("not a sealed value")
        key_id, nonce, body = sealed[1 : 1 + _KEY_ID], sealed[1 + _KEY_ID : _HEAD], sealed[_HEAD:]
        for candidate_id, aead in self._keys:
            if candidate_id == key_id:
                try:
                    return aead.decrypt(nonce, body, context)
                except InvalidTag:
                    break
        raise SealError("no key of FAAS_SECRETS_KEY opens this value")

    def needs_rotation(self, sealed: bytes) -> bool:
        """Whether `sealed` was sealed under a key other than the ring's first."""
        return sealed[1 : 1 + _KEY_ID] != self.primary_id

    def reseal(self, sealed: bytes, context: bytes) -> bytes:
        return self.seal(self.open(sealed, context), context)
