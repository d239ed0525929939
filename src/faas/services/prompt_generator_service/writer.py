"""Asking the model for one JSON spec through the gateway (JSON mode, temperature 0), checking
it, and giving the model one repair round with the problems listed. A spec that is still
invalid after the repair is a 422 naming the problems of both attempts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from jsonschema.validators import Draft202012Validator
from pydantic import ValidationError

from faas.services.gateway_service.client import GatewayClient
from faas.shared.exceptions import ValidationFailed

T = TypeVar("T")

MAX_TOKENS = 2048
MAX_ERRORS = 20

REPAIR_INSTRUCTIONS = """Your answer was not valid. Problems:
{errors}
Answer again with ONE corrected JSON object only."""

# A check turns the model's JSON object into the checked value, or lists what is wrong.
Check = Callable[[dict[str, Any]], tuple[T | None, list[str]]]


@dataclass(frozen=True)
class Written(Generic[T]):
    """The spec as the model wrote it, the checked value, and whether it took a repair."""

    spec: dict[str, Any]
    value: T
    repaired: bool


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors][:MAX_ERRORS]


def pydantic_errors(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors()[:MAX_ERRORS]:
        where = ".".join(str(p) for p in error["loc"])
        out.append(f"$.{where}: {error['msg']}" if where else f"$: {error['msg']}")
    return out


class SpecWriter:
    def __init__(self, gateway: GatewayClient) -> None:
        self.gateway = gateway

    async def write(
        self, model: str, system: str, prompt: str, check: Check[T], what: str
    ) -> Written[T]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ]
        attempts: list[list[str]] = []
        for attempt in range(2):
            content = await self._chat(model, messages)
            spec, errors = _parse(content)
            checked = None
            if spec is not None and not errors:
                checked, errors = check(spec)
            if not errors and spec is not None and checked is not None:
                return Written(spec, checked, repaired=attempt > 0)
            attempts.append(errors)
            messages += [
                {"role": "assistant", "content": content},
                {
                    "role": "user",
                    "content": REPAIR_INSTRUCTIONS.format(
                        errors="\n".join(f"- {e}" for e in errors)
                    ),
                },
            ]
        reasons = attempts[-1]
        raise ValidationFailed(
            f"the model did not produce a valid {what} after one repair round: "
            + "; ".join(reasons),
            details={"errors": reasons, "first_attempt_errors": attempts[0]},
        )

    async def _chat(self, model: str, messages: list[dict[str, Any]]) -> str:
        return await self.gateway.chat_text(
            {
                "model": model,
                "messages": messages,
                "temperature": 0,
                "max_tokens": MAX_TOKENS,
                "response_format": {"type": "json_object"},
                # a regeneration must not replay a cached (possibly rejected) answer
                "cache": {"exact": False, "semantic": False},
            }
        )


def _parse(content: str) -> tuple[dict[str, Any] | None, list[str]]:
    text = content.strip()
    if text.startswith("```"):  # tolerate a fenced answer
        text = text.strip("`")
        text = text.removeprefix("json").strip()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, [f"the answer is not valid JSON: {exc}"]
    if not isinstance(value, dict):
        return None, ["the answer must be a JSON object"]
    return value, []
