"""The request of OpenAI's Responses API (`POST /v1/responses`) as the gateway accepts it.

Parameters the gateway cannot honour are refused by name rather than ignored (`extra="forbid"`,
as OpenAI does with unknown parameters): background runs, server-side conversations, stored
prompts, built-in tools (web search, file search, ...) and `truncation: "auto"`. Hints that
change nothing here (`include`, `reasoning`, `service_tier`, `prompt_cache_key`, ...) are
accepted and echoed in the response, as OpenAI echoes them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from faas.services.gateway_service.models import MAX_MESSAGES, MAX_OUTPUT_TOKENS

RESPONSE_ID_PATTERN = r"^resp_[A-Za-z0-9]{1,96}$"
MAX_TOOLS = 128
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class FunctionTool(BaseModel):
    """A function tool in the Responses API's flat shape (`chat` nests it under `function`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(None, max_length=100_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class TextFormat(BaseModel):
    """`text.format`: plain text, any JSON object, or JSON following a schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, min_length=1, max_length=64)
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesBody(BaseModel):
    """`POST /v1/responses`. `input` items are checked item by item in `responses_items.py`,
    where errors can name the exact place (`input.2.content.0.type`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    input: str | list[Any] = Field(max_length=MAX_MESSAGES)
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_output_tokens: int | None = Field(None, gt=0, le=MAX_OUTPUT_TOKENS)
    text: TextConfig | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    store: bool = True
    previous_response_id: str | None = Field(None, pattern=RESPONSE_ID_PATTERN)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256)
    # Accepted and echoed; they change nothing in how faas answers.
    include: list[str] | None = Field(None, max_length=32)
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = Field(None, max_length=32)
    prompt_cache_key: str | None = Field(None, max_length=256)
    safety_identifier: str | None = Field(None, max_length=256)
    truncation: Literal["disabled"] | None = Field(
        None, description='only "disabled": faas never drops input to fit the context'
    )
    background: Literal[False] | None = Field(None, description="background runs: not offered")


RESPONSES_EXAMPLE = {
    "model": "chat-default",
    "instructions": "Answer in one sentence.",
    "input": "What is a semantic cache?",
}
