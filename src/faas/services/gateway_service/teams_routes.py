"""`/api/v1/teams`: the tenant's teams (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from faas.services.gateway_service.teams import Teams
from faas.services.gateway_service.teams_models import NewTeam, TeamPatch, TeamView
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse

TeamId = Annotated[str, Path(min_length=1, max_length=64)]


def build_teams_router(teams: Teams) -> APIRouter:
    router = APIRouter(prefix="/api/v1/teams", tags=["teams"])

    @router.post("", status_code=201, response_model=ServiceResponse[TeamView])
    async def create_team(body: NewTeam) -> Response:
        """A team of the caller's tenant; its caps and model rules apply from the next call."""
        return respond(await teams.create(caller(), body), status_code=201)

    @router.get("", response_model=ServiceResponse[Page[TeamView]])
    async def list_teams(page: PageDep) -> Response:
        return respond(await teams.list(caller(), limit=page.limit, offset=page.offset))

    @router.get("/{team_id}", response_model=ServiceResponse[TeamView])
    async def get_team(team_id: TeamId) -> Response:
        return respond(await teams.get(caller(), team_id))

    @router.patch("/{team_id}", response_model=ServiceResponse[TeamView])
    async def update_team(team_id: TeamId, body: TeamPatch) -> Response:
        return respond(await teams.update(caller(), team_id, body))

    @router.delete("/{team_id}", response_model=ServiceResponse[TeamView])
    async def delete_team(team_id: TeamId) -> Response:
        return respond(await teams.delete(caller(), team_id))

    return router
