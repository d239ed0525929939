"""Generating an agent: the model writes an agent spec that may only name registered tools;
the agent is created through the Agent service, marked as generated here (its access then
follows this service's permissions)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from faas.services.agent_service.client import AgentClient
from faas.services.agent_service.models import AgentSpec
from faas.services.prompt_generator_service.generations import record_generation
from faas.services.prompt_generator_service.models import AGENT_SPEC_SCHEMA, GeneratedAgent
from faas.services.prompt_generator_service.writer import (
    SpecWriter,
    pydantic_errors,
    schema_errors,
)
from faas.shared.context import Identity
from faas.shared.database import Database
from faas.shared.exceptions import ValidationFailed

AGENT_INSTRUCTIONS = """You design AI agents for a platform. Answer with ONE JSON object only \
(no prose, no code fences) that is valid against this JSON Schema:
{schema}
Rules: `tools` may only name tools from this list of registered tools (name: description):
{tools}
Choose only the tools the agent really needs. `system_prompt` tells the agent its role, \
how to use its tools and how to answer."""


class AgentGenerator:
    def __init__(self, db: Database, writer: SpecWriter, agents: AgentClient) -> None:
        self.db = db
        self.writer = writer
        self.agents = agents

    async def generate(self, identity: Identity, prompt: str, model: str) -> GeneratedAgent:
        tools = await self.agents.list_tools()
        known = sorted(t.name for t in tools)
        listing = "\n".join(f"- {t.name}: {t.description}" for t in tools)
        system = AGENT_INSTRUCTIONS.format(
            schema=orjson.dumps(AGENT_SPEC_SCHEMA).decode(), tools=listing or "(none)"
        )

        def check(spec: dict[str, Any]) -> tuple[AgentSpec | None, list[str]]:
            errors = schema_errors(AGENT_SPEC_SCHEMA, spec)
            if errors:
                return None, errors
            unknown = [t for t in spec["tools"] if t not in known]
            if unknown:
                return None, [f"$.tools: {unknown} are not registered tools; known tools: {known}"]
            try:
                return AgentSpec.model_validate({**spec, "model": model}), []
            except ValidationError as exc:
                return None, pydantic_errors(exc)

        try:
            written = await self.writer.write(model, system, prompt, check, "agent spec")
        except ValidationFailed as exc:
            exc.details["known_tools"] = known
            raise
        agent = await self.agents.create_agent(written.value, origin="prompt_generator")
        generation_id = await record_generation(
            self.db, identity, "agent", prompt, written.spec, agent.id
        )
        return GeneratedAgent(
            generation_id=generation_id,
            agent=agent,
            generated_spec=written.spec,
            repaired=written.repaired,
        )
