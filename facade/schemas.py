"""OpenAI chat-completions wire format as pydantic models: what clients send and get back.

Requests are validated strictly (a string where a number belongs is a 400, as in OpenAI's
own API) and unknown fields are ignored. Features this server cannot honour (non-text
content, tool types other than functions) are refused with the parameter named rather than
dropped silently. Rules that span fields (a tool message must answer a call, tool_choice must
name a tool) are in facade/tool_rules.py. Response models document the format and are used for
non-streaming replies; streaming chunks are written from byte templates (see translate.py)
and only checked against `ChatCompletionChunk` in tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from tensorchat.limits import MAX_SCHEMA_CHARS, MAX_TOOLS, MAX_TOP_LOGPROBS

# Roles the chat templates of our models know; "developer" is OpenAI's newer name for system,
# "function" the legacy name for a tool result (with `functions`/`function_call`).
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
MAX_STOP = 4
INT64_MIN, UINT64_MAX, UINT32_MAX = -(2**63), 2**64 - 1, 2**32 - 1
# OpenAI's rule for function and response-format names. It also keeps a name from ever
# spelling a template's control tokens ("[TOOL_CALLS]", "<tool_call>") in the prompt.
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


# What `content` accepts: a string, text parts, or null (assistant turns that made calls).
MESSAGE_CONTENT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                "required": ["type", "text"],
            },
        },
        {"type": "null"},
    ],
    "title": "Content",
}


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


def bounded_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # A schema becomes a grammar that the service compiles for the request: bounding its size
    # (OpenAI bounds schemas too) makes a huge one a clear 400 rather than a slow compile.
    if value is not None and len(json.dumps(value)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"the schema is longer than {MAX_SCHEMA_CHARS} characters as JSON")
    return value


def json_object_text(value: str) -> str:
    """Call arguments in the history: JSON text of an object, or a ValueError.

    The service renders the arguments in the model's own format (Mistral's template
    re-serialises them), so they must be what the model could have produced: an object.
    """
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ValueError("must be a JSON object, got text that is not JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"must be a JSON object, got {type(parsed).__name__}")
    return value


def join_text_parts(value: Any, kinds: set[str]) -> Any:
    """Message content given as parts, normalised to one string (text parts joined with
    newlines); a part of another kind (an image, a file) is refused, not dropped."""
    if not isinstance(value, list):
        return value
    texts: list[str] = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        # A `type` that is not a string is refused too (a dict would not even hash).
        if not isinstance(kind, str) or not isinstance(part, dict) or kind not in kinds:
            raise ValueError(f"only text content parts are supported, got {kind!r}")
        text = part.get("text")
        if not isinstance(text, str):
            raise ValueError("a text content part needs a string 'text'")
        texts.append(text)
    return "\n".join(texts)


class FunctionDefinition(StrictModel):
    """A function the model may call (`tools[].function`, or an entry of legacy `functions`)."""

    name: Name
    description: str | None = None
    # JSON Schema of the arguments object; absent: a function without parameters.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    _parameters = field_validator("parameters")(bounded_schema)


class FunctionTool(StrictModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(StrictModel):
    name: Name


class NamedToolChoice(StrictModel):
    """tool_choice {"type": "function", "function": {"name": ...}}: call this function."""

    type: Literal["function"]
    function: FunctionName


def by_shape(value: Any) -> str:
    # Tags are capitalised so that an error's location names the parameter alone (errors.py).
    return "Mode" if isinstance(value, str) else "Named"


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("Mode")]
    | Annotated[NamedToolChoice, Tag("Named")],
    Discriminator(by_shape),
]
# Legacy `function_call`: "none", "auto" or {"name": ...}.
FunctionChoice = Annotated[
    Annotated[Literal["none", "auto"], Tag("Mode")] | Annotated[FunctionName, Tag("Named")],
    Discriminator(by_shape),
]


class FunctionCall(StrictModel):
    """A call the model made, in the history: `tool_calls[].function` or legacy `function_call`."""

    name: Name
    # JSON text of the arguments object, as the server returned it.
    arguments: str

    _arguments = field_validator("arguments")(json_object_text)


class ToolCall(StrictModel):
    id: Annotated[str, Field(min_length=1)]
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(StrictModel):
    role: Role
    # Normalised to one string: text parts are joined with newlines. The schema documents
    # what clients may send (OpenAPI), not the normalised string.
    content: Annotated[str, WithJsonSchema(MESSAGE_CONTENT_SCHEMA)]
    # role "assistant": the calls it made (its content may then be null).
    tool_calls: list[ToolCall] | None = None
    # role "assistant", legacy: the one function it called.
    function_call: FunctionCall | None = None
    # role "tool": the call this message answers.
    tool_call_id: str | None = None
    # role "function" (legacy): the function that answered; role "tool": optional.
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _assistant_content_optional(cls, data: Any) -> Any:
        # OpenAI: an assistant message's content is "required unless tool_calls or
        # function_call is specified"; clients then send null or leave it out.
        if isinstance(data, dict) and data.get("role") == "assistant" and "content" not in data:
            return {**data, "content": None}
        return data

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            # OpenAI allows a null content only on assistant turns (that carried tool calls).
            if info.data.get("role") == "assistant":
                return ""
            raise ValueError("content is required")
        return join_text_parts(value, {"text"})

    @field_validator("tool_calls", "function_call")
    @classmethod
    def _assistant_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages carry tool calls")
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _tool_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("role") != "tool":
            raise ValueError("only tool messages carry a tool_call_id")
        return value

    @property
    def calls(self) -> list[FunctionCall]:
        """The functions this (assistant) message called, legacy `function_call` included."""
        if self.tool_calls:
            return [call.function for call in self.tool_calls]
        return [self.function_call] if self.function_call else []


class JsonSchemaFormat(StrictModel):
    name: Name
    description: str | None = None
    # `schema` would shadow a BaseModel attribute; the wire name is the alias.
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None

    _schema = field_validator("schema_")(bounded_schema)


class ResponseFormat(StrictModel):
    """`text` (the default), `json_object` (any JSON object) or `json_schema`."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @field_validator("json_schema")
    @classmethod
    def _only_with_its_type(
        cls, value: JsonSchemaFormat | None, info: ValidationInfo
    ) -> JsonSchemaFormat | None:
        if value is not None and info.data.get("type") != "json_schema":
            raise ValueError("is only allowed with type 'json_schema'")
        return value


class StreamOptions(StrictModel):
    include_usage: bool = False


class GenerationFields(StrictModel):
    """What chat and text completions share: the model, streaming, sampling and stopping.

    One definition, so that both routes accept, bound and map (translate.py) them alike.
    """

    @property
    def legacy_functions(self) -> bool:
        """The request uses legacy `functions` (chat only): errors and replies name them."""
        return False

    @property
    def item_params(self) -> Sequence[str] | None:
        """For a Responses API request, the parameter each message came from (`input[2]`,
        `instructions`): errors name those (translate.openai_param); None for the others."""
        return None

    model: Annotated[str, Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Its upper bound is the facade's `max_n` (admission.py), which the service bounds.
    n: Annotated[int, Field(ge=1)] = 1
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    stop: str | list[str] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    seed: Annotated[int, Field(ge=INT64_MIN, le=UINT64_MAX)] | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # Extensions (vLLM's names), honoured like the rest.
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0, le=UINT32_MAX)] = 0
    top_k: Annotated[int, Field(ge=-1, le=UINT32_MAX)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0, le=UINT32_MAX)]] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not (token.isascii() and token.isdigit()) or int(token) > UINT32_MAX:
                raise ValueError(f"keys must be token ids, got {token!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias for token {token} must be between -100 and 100")
        return value

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def completion_limit(self) -> int | None:
        """The most tokens each choice may generate; None: up to the context."""
        raise NotImplementedError

    @property
    def completion_limit_param(self) -> str:
        """The parameter `completion_limit` came from, for a refusal to name."""
        return "max_tokens"


class ChatCompletionRequest(GenerationFields):
    """POST /v1/chat/completions body."""

    # Checked by `_messages` (OpenAI's wording); the schema says it too.
    messages: Annotated[list[ChatMessage], Field(json_schema_extra={"minItems": 1})]
    max_tokens: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Legacy function calling: mapped to tools (at most one call per choice), and answered
    # with `message.function_call` as OpenAI does.
    functions: Annotated[list[FunctionDefinition], Field(max_length=MAX_TOOLS)] | None = None
    function_call: FunctionChoice | None = None
    response_format: ResponseFormat | None = None

    @field_validator("messages")
    @classmethod
    def _messages(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not value:
            raise ValueError("messages must contain at least one message")
        return value

    @field_validator("response_format")
    @classmethod
    def _schema_present(cls, value: ResponseFormat | None) -> ResponseFormat | None:
        if value is not None and value.type == "json_schema" and value.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object")
        return value

    @property
    def choice_param(self) -> str:
        """The parameter that says whether to call a function: legacy or current."""
        return "function_call" if self.function_call is not None else "tool_choice"

    @property
    def choice(self) -> tuple[Literal["none", "auto", "required", "function"], str]:
        """(mode, function name) from tool_choice or function_call; unset means "auto"."""
        choice = self.function_call if self.function_call is not None else self.tool_choice
        if choice is None:
            return "auto", ""
        if isinstance(choice, str):
            return choice, ""
        name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
        return "function", name

    @property
    def legacy_functions(self) -> bool:
        """The request uses `functions`: replies carry `function_call`, not `tool_calls`."""
        return bool(self.functions)

    @property
    def completion_limit(self) -> int | None:
        # max_completion_tokens replaced max_tokens in OpenAI's API; it wins when both are set.
        return self.max_completion_tokens or self.max_tokens

    @property
    def completion_limit_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"


# Legacy text completions: a prompt is text or token ids, and one request may carry several.
TokenId = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Prompt = str | list[str] | list[TokenId] | list[list[TokenId]]
# OpenAI's bound on legacy `logprobs` (alternatives per position).
MAX_LEGACY_LOGPROBS = 5


class CompletionRequest(GenerationFields):
    """POST /v1/completions body (OpenAI's legacy text completions)."""

    prompt: Prompt
    # OpenAI's default for this route.
    max_tokens: Annotated[int, Field(ge=0, le=UINT32_MAX)] | None = 16
    echo: bool = False
    # The chosen token's log probability and this many alternatives (0-5).
    logprobs: Annotated[int, Field(ge=0, le=MAX_LEGACY_LOGPROBS)] | None = None
    # Refused unless neutral (admission.py): the server does not generate extra candidates,
    # nor fill in the middle.
    best_of: Annotated[int, Field(ge=1)] | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and (not value or any(p in ("", []) for p in value)):
            raise ValueError("prompts must not be empty")
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text or its token ids."""
        value = self.prompt
        if isinstance(value, str):
            return [value]
        if all(isinstance(p, int) for p in value):
            return [list(value)]  # type: ignore[arg-type]
        return list(value)  # type: ignore[arg-type]

    @property
    def completion_limit(self) -> int | None:
        return self.max_tokens


# Responses -------------------------------------------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class CalledFunction(BaseModel):
    name: str
    # JSON text; a whole object unless the choice was cut short (finish_reason "length").
    arguments: str


class MessageToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class AssistantMessage(BaseModel):
    """The reply's message. `tool_calls` / `function_call` appear only when calls were made
    (the reply is dumped with exclude_unset, as OpenAI omits them)."""

    role: Literal["assistant"] = "assistant"
    # Null when the model only called tools.
    content: str | None
    refusal: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    # Legacy, for requests that used `functions`.
    function_call: CalledFunction | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[Choice]
    usage: Usage


class ChunkFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(BaseModel):
    """A piece of a call: the first has id, type and function.name; later ones arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunction | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None
    function_call: ChunkFunction | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    """Legacy logprobs: parallel lists, one entry per token (facade/completions.py)."""

    tokens: list[str]
    # Null for an echoed prompt's first token (nothing precedes it).
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    """A text completion (POST /v1/completions); chunks have this shape too, with
    finish_reason null until a choice's last chunk, and `usage` only in the last one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
