"""The shape of the code, measured: module, class and function sizes, and calls between services
that bypass the typed clients. `tests/unit/test_architecture.py` holds the code to the targets;
`python -m tests.support.code_shape` prints the table that docs/architecture.md quotes."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "faas"
SERVICES = SRC / "services"

MODULE_LINES = 400
CLASS_LINES = 250
FUNCTION_LINES = 60


@dataclass(frozen=True)
class Sized:
    kind: str  # module, class or function
    name: str  # dotted: faas.services.agent_service.runs.RunService.start
    lines: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    """Every module of the package but the database migrations (long by nature: one schema
    change each, written once and never edited)."""
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def sizes(path: Path) -> list[Sized]:
    text = path.read_text()
    module = _module_name(path)
    found = [Sized("module", module, len(text.splitlines()))]

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}.{child.name}"
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append(Sized(kind, name, lines))
                visit(child, name)

    visit(ast.parse(text), module)
    return found


def all_sizes() -> list[Sized]:
    return [sized for path in source_files() for sized in sizes(path)]


LIMITS = {"module": MODULE_LINES, "class": CLASS_LINES, "function": FUNCTION_LINES}


def over_target(measured: list[Sized]) -> list[Sized]:
    return [s for s in measured if s.lines > LIMITS[s.kind]]


def raw_service_calls() -> list[str]:
    """`clients.get("<service>")` outside a `client.py`: a call to another service by URL and
    dict rather than through that service's typed client."""
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        if path.name == "client.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Attribute | ast.Name)
                and getattr(node.func.value, "attr", getattr(node.func.value, "id", ""))
                in ("clients", "_clients")
            ):
                found.append(f"{_module_name(path)}:{node.lineno}")
    return found


def table() -> str:
    measured = all_sizes()
    rows = ["| measure | target | now |", "|---|---|---|"]
    for kind, limit in LIMITS.items():
        biggest = max((s for s in measured if s.kind == kind), key=lambda s: s.lines)
        over = sum(1 for s in measured if s.kind == kind and s.lines > limit)
        rows.append(f"| largest {kind} | ≤ {limit} lines | {biggest.lines} (`{biggest.name}`) |")
        plural = "classes" if kind == "class" else f"{kind}s"
        rows.append(f"| {plural} over {limit} lines | 0 | {over} |")
    rows.append(f"| cross-service calls not through a client.py | 0 | {len(raw_service_calls())} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
    for sized in sorted(over_target(all_sizes()), key=lambda s: -s.lines):
        print(f"  over: {sized.kind} {sized.name} {sized.lines}", file=sys.stderr)
