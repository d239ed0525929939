"""Wire models of the agent service, and the tools a tenant declares as data: `http` (one
HTTP endpoint) and `expression` (one arithmetic formula over numeric arguments). Neither tool
kind runs code: an expression is checked by the shared evaluator's whitelist when declared
and interpreted by it when called. The Prompt Generator writes tool specs to these models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

from faas.backends.limits import MAX_BUDGET_USD
from faas.services.agent_service.tool_rules import (
    MCP_SERVER_NAME,
    Headers,
    McpUrl,
    NumericParameters,
    ObjectSchema,
    ToolDescription,
    ToolName,
    UrlTemplate,
    placeholders,
)
from faas.shared.expressions import MAX_EXPRESSION_CHARS, CheckedExpression, ExpressionError, check

NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,127}$"
# Where a resource came from; `prompt_generator` resources follow that service's permissions.
Origin = Literal["prompt_generator"]


class MemorySpec(BaseModel):
    window: int = Field(20, ge=1, le=500, description="recent messages kept in context")
    max_context_tokens: int = Field(3000, ge=256, le=200_000)
    long_term: bool = False


class AgentSpec(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "helper",
                    "description": "Answers questions; does arithmetic with the calculator",
                    "model": "chat-default",
                    "system_prompt": "You are a concise assistant.",
                    "tools": ["calculator"],
                    "max_iterations": 4,
                }
            ]
        }
    )

    name: str = Field(pattern=NAME)
    description: str = Field("", max_length=2000)
    model: str = Field("chat-default", min_length=1, max_length=128)
    system_prompt: str | None = Field(None, max_length=100_000)
    prompt_template: str | None = Field(None, max_length=128)
    tools: list[str] = Field(default_factory=list, max_length=32)
    memory: MemorySpec = Field(default_factory=MemorySpec)
    max_iterations: int = Field(6, ge=1, le=25)
    temperature: float = Field(0.0, ge=0, le=2)

    @model_validator(mode="after")
    def _one_prompt(self) -> AgentSpec:
        if self.system_prompt is not None and self.prompt_template is not None:
            raise ValueError("give system_prompt or prompt_template, not both")
        return self


class AgentUpdate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"system_prompt": "You answer in one sentence.", "max_iterations": 3}]
        }
    )

    name: str | None = Field(None, pattern=NAME)
    description: str | None = Field(None, max_length=2000)
    model: str | None = Field(None, min_length=1, max_length=128)
    system_prompt: str | None = None
    prompt_template: str | None = None
    tools: list[str] | None = Field(None, max_length=32)
    memory: MemorySpec | None = None
    max_iterations: int | None = Field(None, ge=1, le=25)
    temperature: float | None = Field(None, ge=0, le=2)


class AgentView(AgentSpec):
    # The request's example would describe a response without its id and times.
    model_config = ConfigDict(json_schema_extra={})

    id: str
    created_by: str | None = None
    origin: Origin | None = Field(
        None, description="prompt_generator: access by others follows its permissions"
    )
    created_at: datetime
    updated_at: datetime


class ToolView(BaseModel):
    """A tool as listed: its spec fields plus `kind` (built-in, http, expression), and for
    tenant tools who made it and where it came from."""

    model_config = {"extra": "allow"}

    name: str
    description: str
    parameters: dict[str, Any]
    kind: str
    created_by: str | None = None
    origin: Origin | None = None


class ExecuteRequest(BaseModel):
    task: str = Field(min_length=1, max_length=100_000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    run_async: bool = Field(False, alias="async")
    budget_usd: float | None = Field(
        None,
        ge=0,
        le=MAX_BUDGET_USD,
        allow_inf_nan=False,
        description="the most the run's model calls may cost together (429 level `agent`)",
    )

    model_config = {
        "json_schema_extra": {"examples": [{"task": "What is 17 * 23?"}]},
        "populate_by_name": True,
    }


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message": "Hello! What can you do?"}]}
    )

    message: str = Field(min_length=1, max_length=100_000)
    session_id: str | None = Field(None, max_length=64)
    stream: bool = False


class Step(BaseModel):
    type: Literal["model", "tool"]
    index: int
    duration_ms: float
    name: str | None = None
    arguments: Any = None
    result: Any = None
    error: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None


class RunView(BaseModel):
    id: str
    agent_id: str
    session_id: str | None
    status: Literal["running", "completed", "failed", "max_iterations"]
    input: str
    output: str | None
    steps: list[Step]
    usage: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ChatResponse(BaseModel):
    session_id: str
    run_id: str
    reply: str | None
    status: str


class MemoryCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"text": "The user prefers answers in French.", "metadata": {"source": "profile"}}
            ]
        }
    )

    text: str = Field(min_length=1, max_length=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class MemoryView(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]
    created_at: datetime
    score: float | None = None


class WorkflowStep(BaseModel):
    agent_id: str = Field(min_length=1, max_length=64)
    task: str | None = Field(
        None, description="a template; {input} is replaced by the previous step's output"
    )


class WorkflowRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "input": "faas serves AI components as independent services.",
                    "steps": [
                        {
                            "agent_id": "6f1c2a9e4b7d4e0f8a3b5c7d9e1f2a4b",
                            "task": "Summarise in five words: {input}",
                        }
                    ],
                }
            ]
        }
    )

    mode: Literal["sequence"] = "sequence"
    input: str = Field(min_length=1, max_length=100_000)
    steps: list[WorkflowStep] = Field(min_length=1, max_length=20)


class WorkflowResponse(BaseModel):
    output: str | None
    runs: list[RunView]


class RunFinished(BaseModel):
    """The body of `agent.run_completed.{tenant}` (status `completed`) and
    `agent.run_failed.{tenant}` (any other final status)."""

    agent_id: str
    run_id: str
    status: Literal["completed", "failed", "max_iterations"]
    usage: dict[str, Any] = Field(description="tokens and timings of the run, as in `RunView`")


# -- tenant tools ----------------------------------------------------------------------------


class HttpToolSpec(BaseModel):
    """A tenant-declared tool that calls one HTTP endpoint. `{param}` placeholders in the URL
    (path and query, never the host) and header values are filled from the arguments, URL
    values percent-encoded; for POST and PUT the other arguments are the JSON body."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "http",
                    "name": "order_status",
                    "description": "The status of an order, by its id",
                    "parameters": {
                        "type": "object",
                        "properties": {"order_id": {"type": "string"}},
                        "required": ["order_id"],
                    },
                    "method": "GET",
                    "url_template": "https://shop.internal/api/orders/{order_id}",
                }
            ]
        }
    )

    kind: Literal["http"] = "http"
    name: ToolName
    description: ToolDescription
    parameters: ObjectSchema
    method: Literal["GET", "POST", "PUT", "DELETE"] = "GET"
    url_template: UrlTemplate
    headers: Headers = Field(default_factory=dict)

    @model_validator(mode="after")
    def _placeholders_declared(self) -> HttpToolSpec:
        used = set(placeholders(self.url_template, "url_template"))
        for name, header in self.headers.items():
            used |= set(placeholders(header, f"header {name}"))
        properties = self.parameters.get("properties") or {}
        required = set(self.parameters.get("required") or [])
        missing = sorted(n for n in used if n not in properties or n not in required)
        if missing:
            raise ValueError(
                f"placeholders {missing} must be declared as required properties of parameters"
            )
        return self


class ExpressionToolSpec(BaseModel):
    """A tool that computes `expression` from its arguments: each name the expression uses is a
    required numeric property of `parameters` (a JSON Schema of "type": "object")."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "expression",
                    "name": "with_vat",
                    "description": "A net price with 20% VAT added",
                    "expression": "price * 1.2",
                    "parameters": {
                        "type": "object",
                        "properties": {"price": {"type": "number"}},
                        "required": ["price"],
                    },
                }
            ]
        }
    )

    kind: Literal["expression"] = "expression"
    name: ToolName
    description: ToolDescription
    expression: str = Field(min_length=1, max_length=MAX_EXPRESSION_CHARS)
    parameters: NumericParameters

    @model_validator(mode="after")
    def _expression(self) -> ExpressionToolSpec:
        self.checked()
        return self

    def checked(self) -> CheckedExpression:
        properties = self.parameters.get("properties") or {}
        try:
            checked = check(self.expression, list(properties))
        except ExpressionError as exc:
            raise ValueError(f"expression: {exc}") from exc
        optional = sorted(checked.names - set(self.parameters.get("required") or []))
        if optional:
            raise ValueError(
                f"expression: variables {optional} must be required properties of parameters"
            )
        return checked


def _kind(value: Any) -> str:
    """Rows stored before expression tools existed carry no `kind`: they are HTTP tools."""
    kind = value.get("kind", "http") if isinstance(value, dict) else getattr(value, "kind", "")
    return str(kind)


TenantToolSpec = Annotated[
    Annotated[HttpToolSpec, Tag("http")] | Annotated[ExpressionToolSpec, Tag("expression")],
    Discriminator(
        _kind,
        custom_error_type="invalid_kind",
        custom_error_message='kind must be "http" or "expression"',
    ),
]
TOOL_SPECS: dict[str, type[HttpToolSpec] | type[ExpressionToolSpec]] = {
    "http": HttpToolSpec,
    "expression": ExpressionToolSpec,
}
_TOOL_SPEC: TypeAdapter[HttpToolSpec | ExpressionToolSpec] = TypeAdapter(TenantToolSpec)


def parse_tool_spec(value: dict[str, Any]) -> HttpToolSpec | ExpressionToolSpec:
    return _TOOL_SPEC.validate_python(value)


# -- MCP servers -----------------------------------------------------------------------------


class McpServerCreate(BaseModel):
    """An MCP server (streamable HTTP) whose tools the tenant's agents may use: an agent lists
    `mcp:<name>` among its tools and gets them as `<name>__<tool>`. `headers` (credentials)
    are stored sealed and never returned."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "weather",
                    "url": "https://mcp.example.com/mcp",
                    "headers": {"Authorization": "Bearer <token>"},
                }
            ]
        }
    )

    name: str = Field(pattern=MCP_SERVER_NAME)
    url: McpUrl
    headers: Headers = Field(default_factory=dict, max_length=16)


class McpServerView(BaseModel):
    name: str
    url: str
    headers: dict[str, str] = Field(description="header names with their values masked")
    created_by: str | None
    created_at: datetime
