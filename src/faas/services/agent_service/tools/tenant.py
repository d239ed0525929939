"""The tools a tenant declares (stored as specs, see models.py) made runnable."""

from __future__ import annotations

from typing import Any

from faas.services.agent_service.models import ExpressionToolSpec, HttpToolSpec
from faas.services.agent_service.tools.base import Tool, ToolContext, ToolError
from faas.services.agent_service.tools.http import DeclarativeHttpTool
from faas.shared.expressions import ExpressionError, evaluate


class ExpressionTool:
    """An `ExpressionToolSpec`: its formula, checked once, evaluated with the arguments."""

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
        except ExpressionError as exc:
            raise ToolError(str(exc)) from exc


def build_tool(spec: HttpToolSpec | ExpressionToolSpec) -> Tool:
    if isinstance(spec, ExpressionToolSpec):
        return ExpressionTool(spec)
    return DeclarativeHttpTool(spec)
