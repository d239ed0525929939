"""The request bodies of the Anthropic Messages API (`/v1/messages`, `/count_tokens`) as the
gateway accepts them. Block fields it does not use (`cache_control`, `citations`) are allowed
and ignored; block types it cannot translate (documents, thinking) are refused by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faas.services.gateway_service.models import MAX_MESSAGES, MAX_OUTPUT_TOKENS, CacheOptions

_ID = Field(min_length=1, max_length=256)


class TextBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ImageSource(BaseModel):
    type: Literal["base64", "url"]
    media_type: str | None = Field(None, max_length=64)
    data: str | None = None
    url: str | None = Field(None, max_length=8192)

    @model_validator(mode="after")
    def _complete(self) -> ImageSource:
        if self.type == "base64" and not (self.media_type and self.data):
            raise ValueError("a base64 image source needs media_type and data")
        if self.type == "url" and not self.url:
            raise ValueError("a url image source needs url")
        return self


class ImageBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["tool_use"]
    id: str = _ID
    name: str = Field(min_length=1, max_length=128)
    input: dict[str, Any]


ResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["tool_result"]
    tool_use_id: str = _ID
    content: str | list[ResultPart] | None = None
    is_error: bool = False


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")
]


class InputMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, min_length=1, max_length=128)
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError('tool_choice of type "tool" needs the tool\'s name')
        return self


class Metadata(BaseModel):
    user_id: str | None = Field(None, max_length=256)


class CountTokensBody(BaseModel):
    """`/v1/messages/count_tokens`: what the prompt of a `/v1/messages` request weighs."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=128)
    messages: list[InputMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None


class MessagesBody(CountTokensBody):
    """Fields Anthropic defines that no OpenAI-shaped provider can honour (`thinking`,
    `service_tier`, `container`, `top_k`) are accepted and dropped, as the README says."""

    max_tokens: int = Field(gt=0, le=MAX_OUTPUT_TOKENS)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, gt=0)
    metadata: Metadata | None = None
    stream: bool = False
    cache: CacheOptions | None = Field(None, description="faas extension: response caching")


MESSAGES_EXAMPLE = {
    "model": "chat-default",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "In one sentence, what is a semantic cache?"}],
}
COUNT_TOKENS_EXAMPLE = {
    "model": "chat-default",
    "messages": [{"role": "user", "content": "In one sentence, what is a semantic cache?"}],
}
