"""A safe arithmetic evaluator over Python's `ast`: numbers, + - * / // % **, unary + -,
parentheses, a fixed set of math functions, the constants pi and e, and the variables a caller
declares (an expression tool's parameters). Everything else (other names, attributes,
subscripts, lambdas, comprehensions, calls to anything not listed) is refused by `check` before
anything is computed, and the size of numbers is bounded so an expression cannot burn CPU or
memory. Never eval/exec."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
# Intermediate integers stay below this many bits (~10**1233): cheap to multiply, and
# `10**1000` still works.
MAX_INT_BITS = 4096
# Results must fit a JSON number a float can hold; ints beyond 64 bits are returned as floats.
MAX_RESULT = 1e300
MAX_JSON_INT = 2**63 - 1

Number = int | float


class ExpressionError(ValueError):
    """The expression is not allowed or cannot be evaluated."""


def _check(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError("the result is not a real number")
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise ExpressionError("number too large")
    elif not math.isfinite(value):
        raise ExpressionError("number too large or undefined")
    return value


def _pow(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ExpressionError(f"exponent larger than {MAX_EXPONENT} in magnitude")
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise ExpressionError("number too large")
    return _check(base**exponent)


def _round(value: Number, ndigits: int | None = None) -> Number:
    if ndigits is None:
        return round(value)
    if isinstance(ndigits, bool) or not isinstance(ndigits, int):
        raise ExpressionError("round's second argument must be an integer")
    return round(value, ndigits)


def _log(value: Number, base: Number | None = None) -> float:
    return math.log(value) if base is None else math.log(value, base)


def _least(*values: Number) -> Number:
    if not values:
        raise ExpressionError("min needs at least one argument")
    return min(values)


def _most(*values: Number) -> Number:
    if not values:
        raise ExpressionError("max needs at least one argument")
    return max(values)


BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": _log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": _round,
    "min": _least,
    "max": _most,
    "floor": math.floor,
    "ceil": math.ceil,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


RESERVED = frozenset(FUNCTIONS) | frozenset(CONSTANTS)


@dataclass(frozen=True)
class CheckedExpression:
    """An expression whose syntax tree passed the whitelist; `names` are the variables it uses."""

    source: str
    tree: ast.Expression
    names: frozenset[str]


def _check_node(node: ast.AST, variables: Collection[str], used: set[str]) -> None:
    """The whitelist, in one place: raise ExpressionError on anything else."""
    if isinstance(node, ast.Expression):
        _check_node(node.body, variables, used)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numbers are allowed, not {node.value!r}")
    elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        _check_node(node.left, variables, used)
        _check_node(node.right, variables, used)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        _check_node(node.operand, variables, used)
    elif isinstance(node, ast.Name):
        if node.id in variables:
            used.add(node.id)
        elif node.id not in CONSTANTS:
            raise ExpressionError(f"unknown name {node.id!r}")
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExpressionError("only the listed math functions can be called")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError("functions take positional arguments only")
        for arg in node.args:
            _check_node(arg, variables, used)
    else:
        raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")


def check(expression: str, variables: Collection[str] = ()) -> CheckedExpression:
    """Parse and whitelist an expression without evaluating it. `variables` are the names it may
    use besides the constants; they cannot shadow a function or a constant."""
    shadowing = sorted(set(variables) & RESERVED)
    if shadowing:
        raise ExpressionError(f"{', '.join(shadowing)} cannot be variable names (reserved)")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ExpressionError(f"not a valid expression: {exc}") from exc
    except (RecursionError, MemoryError) as exc:
        raise ExpressionError("expression too deep") from exc
    used: set[str] = set()
    try:
        _check_node(tree, variables, used)
    except RecursionError as exc:
        raise ExpressionError("expression too deep") from exc
    return CheckedExpression(source=expression, tree=tree, names=frozenset(used))


def _eval(node: ast.AST, env: Mapping[str, Number]) -> Number:
    """Interpret a tree `check` accepted."""
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return _check(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        return _check(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        return _check(UNARY[type(node.op)](_eval(node.operand, env)))
    if isinstance(node, ast.Name):
        if node.id in env:
            return _check(env[node.id])
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_eval(a, env) for a in node.args]
        return _check(FUNCTIONS[node.func.id](*args))
    raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")


def evaluate(
    expression: str | CheckedExpression, variables: Mapping[str, Number] | None = None
) -> Number:
    """The value of an arithmetic expression, else ExpressionError with a readable reason.
    `variables` give the values of the names the expression may use."""
    env = dict(variables or {})
    checked = expression if isinstance(expression, CheckedExpression) else check(expression, env)
    missing = sorted(checked.names - set(env))
    if missing:
        raise ExpressionError(f"no value for {', '.join(missing)}")
    try:
        value = _eval(checked.tree, env)
    except ZeroDivisionError as exc:
        raise ExpressionError("division by zero") from exc
    except (OverflowError, RecursionError) as exc:
        raise ExpressionError("number too large or expression too deep") from exc
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ExpressionError):
            raise
        raise ExpressionError(f"cannot evaluate: {exc}") from exc
    if abs(value) > MAX_RESULT:
        raise ExpressionError(f"result larger than {MAX_RESULT:g} in magnitude")
    if isinstance(value, int) and abs(value) > MAX_JSON_INT:
        return float(value)
    return value
