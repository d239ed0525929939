"""Wire models of the prompt generator service and the JSON Schemas the model must follow."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from faas.services.agent_service.models import AgentView, ToolView
from faas.shared.input_rules import PRINTABLE

Kind = Literal["agent", "tool"]
Permission = Literal["read", "execute", "admin"]
# admin implies execute implies read
LEVELS: dict[str, int] = {"read": 1, "execute": 2, "admin": 3}

AGENT_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,127}$",
            "description": "short identifier: letters, digits, space, _ . -",
        },
        "description": {"type": "string", "maxLength": 2000},
        "system_prompt": {"type": "string", "minLength": 1, "maxLength": 100_000},
        "tools": {
            "type": "array",
            "items": {"type": "string"},
            "maxItems": 32,
            "uniqueItems": True,
            "description": "names of registered tools only",
        },
        "max_iterations": {"type": "integer", "minimum": 1, "maximum": 25},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    },
    "required": ["name", "description", "system_prompt", "tools"],
    "additionalProperties": False,
}

TOOL_NAME = {"type": "string", "pattern": r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$"}
TOOL_DESCRIPTION = {"type": "string", "minLength": 1, "maxLength": 1024}

HTTP_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"const": "http"},
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "parameters": {
            "type": "object",
            "description": 'a JSON Schema with "type": "object"; every {placeholder} used in '
            "url_template or headers must be a required property",
        },
        "method": {"enum": ["GET", "POST", "PUT", "DELETE"]},
        "url_template": {"type": "string", "minLength": 1, "maxLength": 2048},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name", "description", "parameters", "url_template"],
    "additionalProperties": False,
}

EXPRESSION_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"const": "expression"},
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "expression": {
            "type": "string",
            "minLength": 1,
            "maxLength": 500,
            "description": "one arithmetic formula over the parameter names",
        },
        "parameters": {
            "type": "object",
            "properties": {
                "type": {"const": "object"},
                "properties": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"type": {"enum": ["number", "integer"]}},
                        "required": ["type"],
                    },
                },
                "required": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["type", "properties", "required"],
        },
    },
    "required": ["kind", "name", "description", "expression", "parameters"],
    "additionalProperties": False,
}

# A tool answer is checked against the schema of its `kind` (absent: http).
TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "http": HTTP_TOOL_SCHEMA,
    "expression": EXPRESSION_TOOL_SCHEMA,
}


class AgentPrompt(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"prompt": "An agent that answers questions about our refund policy"}]
        }
    )

    prompt: str = Field(min_length=1, max_length=20_000)
    model: str | None = Field(
        None, min_length=1, max_length=128, description="gateway model (also the agent's model)"
    )


class ToolPrompt(BaseModel):
    """Describe a tool: the model picks `http` (calls an API) or `expression` (a formula)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"prompt": "A tool that looks up an order's status by its id"}]
        }
    )

    prompt: str = Field(min_length=1, max_length=20_000)
    model: str | None = Field(None, min_length=1, max_length=128)


class GeneratedAgent(BaseModel):
    generation_id: str
    agent: AgentView
    generated_spec: dict[str, Any]
    repaired: bool


class GeneratedTool(BaseModel):
    generation_id: str
    tool: ToolView
    generated_spec: dict[str, Any]
    repaired: bool


class RateRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"rating": 5, "feedback": "Clear and accurate"}]}
    )

    rating: int = Field(ge=1, le=5)
    feedback: str | None = Field(None, max_length=5000)


class FeedbackItem(BaseModel):
    id: str
    rating: int
    feedback: str | None
    user_id: str | None
    created_at: datetime


class FeedbackStats(BaseModel):
    count: int
    average: float | None
    distribution: dict[str, int]
    recent: list[FeedbackItem]


class PermissionChange(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "resource_type": "agent",
                    "resource_id": "6f1c2a9e4b7d4e0f8a3b5c7d9e1f2a4b",
                    "user_id": "bob",
                    "permission": "execute",
                    "action": "grant",
                }
            ]
        }
    )

    resource_type: Kind
    resource_id: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)
    user_id: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)
    permission: Permission
    action: Literal["grant", "revoke"]


class PermissionView(BaseModel):
    resource_type: Kind
    resource_id: str
    user_id: str
    permission: Permission
    granted_by: str | None
    created_at: datetime


class PermissionList(BaseModel):
    resource_type: Kind
    resource_id: str
    owner_user_id: str | None
    grants: list[PermissionView]


class PermissionCheck(BaseModel):
    allowed: bool
    reason: str


class CheckItem(BaseModel):
    resource_type: Kind
    resource_id: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)
    permission: Permission


class BulkCheckRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "bob",
                    "checks": [
                        {
                            "resource_type": "agent",
                            "resource_id": "6f1c2a9e4b7d4e0f8a3b5c7d9e1f2a4b",
                            "permission": "execute",
                        }
                    ],
                }
            ]
        }
    )

    user_id: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)
    checks: list[CheckItem] = Field(min_length=1, max_length=100)


class CheckResult(CheckItem):
    allowed: bool
    reason: str


class BulkCheck(BaseModel):
    user_id: str
    results: list[CheckResult] = Field(description="in the order of the checks asked")


class Accessible(BaseModel):
    resource_type: Kind
    user_id: str
    permission: Permission
    resource_ids: list[str] = Field(
        description="every resource of this type the user holds the permission on (owned or "
        "granted): exactly those for which the check would answer allowed"
    )
