"""The tools a tenant declares, as data: `http` (one HTTP endpoint, see `HttpToolSpec`) and
`expression` (one arithmetic formula over numeric arguments). Neither kind runs code: an
expression goes through the calculator's whitelist (`calculator.check`) when it is declared and
is interpreted by it when called."""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from faas.services.agent_service.calculator import (
    MAX_EXPRESSION_CHARS,
    CalculatorError,
    CheckedExpression,
    check,
    evaluate,
)
from faas.services.agent_service.tools import (
    NAME_PATTERN,
    HttpToolSpec,
    Tool,
    ToolContext,
    ToolError,
    declarative_http_tool,
    not_builtin,
    object_schema,
)

VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
NUMERIC_TYPES = frozenset({"number", "integer"})


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
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1, max_length=1024)
    expression: str = Field(min_length=1, max_length=MAX_EXPRESSION_CHARS)
    parameters: dict[str, Any]

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        return not_builtin(value)

    @field_validator("parameters")
    @classmethod
    def _numeric_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        object_schema(value)
        for name, schema in (value.get("properties") or {}).items():
            if not VARIABLE.match(name) or keyword.iskeyword(name):
                raise ValueError(f"parameter {name!r} must be a plain identifier")
            kind = schema.get("type") if isinstance(schema, dict) else None
            if not isinstance(kind, str) or kind not in NUMERIC_TYPES:
                raise ValueError(f'parameter {name!r} must have "type": "number" or "integer"')
        return value

    @model_validator(mode="after")
    def _expression(self) -> ExpressionToolSpec:
        self.checked()
        return self

    def checked(self) -> CheckedExpression:
        properties = self.parameters.get("properties") or {}
        try:
            checked = check(self.expression, list(properties))
        except CalculatorError as exc:
            raise ValueError(f"expression: {exc}") from exc
        required = set(self.parameters.get("required") or [])
        optional = sorted(checked.names - required)
        if optional:
            raise ValueError(
                f"expression: variables {optional} must be required properties of parameters"
            )
        return checked


class ExpressionTool:
    def __init__(self, spec: ExpressionToolSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.parameters = spec.parameters
        self._checked = spec.checked()

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        values = {name: args[name] for name in self._checked.names}
        try:
            return {"result": evaluate(self._checked, values)}
        except CalculatorError as exc:
            raise ToolError(str(exc)) from exc


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
_ADAPTER: TypeAdapter[HttpToolSpec | ExpressionToolSpec] = TypeAdapter(TenantToolSpec)


def parse_tool_spec(value: dict[str, Any]) -> HttpToolSpec | ExpressionToolSpec:
    return _ADAPTER.validate_python(value)


def build_tool(spec: HttpToolSpec | ExpressionToolSpec) -> Tool:
    if isinstance(spec, ExpressionToolSpec):
        return ExpressionTool(spec)
    return declarative_http_tool(spec)
