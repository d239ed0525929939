"""`/api/v1/keys`: create, list, read, rotate and revoke the caller's tenant's API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from faas.keys.models import KeyCreated, KeyView, NewKey
from faas.keys.service import ApiKeys
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse

KeyId = Annotated[str, Path(min_length=1, max_length=64)]


def build_keys_router(keys: ApiKeys) -> APIRouter:
    router = APIRouter(prefix="/api/v1/keys", tags=["keys"])

    @router.post("", status_code=201, response_model=ServiceResponse[KeyCreated])
    async def create_key(body: NewKey) -> Response:
        """A new key; the answer is the only time `key` is shown."""
        return respond(await keys.create(caller(), body), status_code=201)

    @router.get("", response_model=ServiceResponse[Page[KeyView]])
    async def list_keys(page: PageDep) -> Response:
        return respond(await keys.list(caller(), limit=page.limit, offset=page.offset))

    @router.get("/{key_id}", response_model=ServiceResponse[KeyView])
    async def get_key(key_id: KeyId) -> Response:
        return respond(await keys.get(caller(), key_id))

    @router.delete("/{key_id}", response_model=ServiceResponse[KeyView])
    async def revoke_key(key_id: KeyId) -> Response:
        """Revoke the key: it stops working on every replica at once."""
        return respond(await keys.revoke(caller(), key_id))

    @router.post("/{key_id}/rotate", response_model=ServiceResponse[KeyCreated])
    async def rotate_key(key_id: KeyId) -> Response:
        """New material for the key (same id and settings); the old key stops at once."""
        return respond(await keys.rotate(caller(), key_id))

    return router
