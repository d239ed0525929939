"""Generating a tool: the model writes a declarative HTTP tool spec or an arithmetic
expression tool spec (checked by the Agent service's own models — an expression is parsed by
the calculator's whitelist, never run as code), created through the Agent service and marked as
generated here."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from faas.services.agent_service.client import AgentClient
from faas.services.agent_service.models import TOOL_SPECS, ExpressionToolSpec, HttpToolSpec
from faas.services.prompt_generator_service.generations import record_generation
from faas.services.prompt_generator_service.models import (
    EXPRESSION_TOOL_SCHEMA,
    HTTP_TOOL_SCHEMA,
    TOOL_SCHEMAS,
    GeneratedTool,
)
from faas.services.prompt_generator_service.writer import (
    SpecWriter,
    Written,
    pydantic_errors,
    schema_errors,
)
from faas.shared.context import Identity
from faas.shared.database import Database
from faas.shared.expressions import CONSTANTS, FUNCTIONS

TOOL_INSTRUCTIONS = """You design tools for AI agents. Answer with ONE JSON object only (no \
prose, no code fences), of one of two kinds.

"kind": "http" when the tool calls one HTTP API. Valid against this JSON Schema:
{http_schema}
Rules: `url_template` is an absolute http(s) URL; `{{param}}` placeholders may appear in the \
path, query and header values (never in the host) and each must be a required property of \
`parameters`, which is a JSON Schema of "type": "object". For POST and PUT the other arguments \
are the JSON body. Never put secrets or credentials in the URL.

"kind": "expression" when the tool computes a number from numbers with one formula. Valid \
against this JSON Schema:
{expression_schema}
Rules: `expression` is arithmetic only: numbers, the parameter names, + - * / // % ** and \
parentheses, the functions {functions} and the constants {constants}. No other names, no \
attribute access, no strings, no code. Every name it uses is a required property of \
`parameters` with "type": "number" or "integer".

Do not use the name of an existing tool: {existing}."""

ToolSpec = HttpToolSpec | ExpressionToolSpec


class ToolGenerator:
    def __init__(self, db: Database, writer: SpecWriter, agents: AgentClient) -> None:
        self.db = db
        self.writer = writer
        self.agents = agents

    async def generate(self, identity: Identity, prompt: str, model: str) -> GeneratedTool:
        existing = sorted(t.name for t in await self.agents.list_tools())
        system = TOOL_INSTRUCTIONS.format(
            http_schema=orjson.dumps(HTTP_TOOL_SCHEMA).decode(),
            expression_schema=orjson.dumps(EXPRESSION_TOOL_SCHEMA).decode(),
            functions=", ".join(FUNCTIONS),
            constants=" and ".join(CONSTANTS),
            existing=", ".join(existing) or "(none)",
        )

        def check(spec: dict[str, Any]) -> tuple[ToolSpec | None, list[str]]:
            kind = spec.get("kind", "http")
            if not isinstance(kind, str) or kind not in TOOL_SCHEMAS:
                return None, [f'$.kind: must be "http" or "expression", not {kind!r}']
            errors = schema_errors(TOOL_SCHEMAS[kind], spec)
            if errors:
                return None, errors
            if spec["name"] in existing:
                return None, [f"$.name: a tool named {spec['name']!r} already exists"]
            try:
                return TOOL_SPECS[kind].model_validate(spec), []
            except ValidationError as exc:
                return None, pydantic_errors(exc)

        written: Written[ToolSpec] = await self.writer.write(
            model, system, prompt, check, "tool spec"
        )
        tool = await self.agents.create_tool(written.value, origin="prompt_generator")
        generation_id = await record_generation(
            self.db, identity, "tool", prompt, written.spec, written.value.name
        )
        return GeneratedTool(
            generation_id=generation_id,
            tool=tool,
            generated_spec=written.spec,
            repaired=written.repaired,
        )
