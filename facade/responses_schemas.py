"""OpenAI's Responses API (POST /v1/responses) wire format as pydantic models.

The request is validated as strictly as a chat request (facade/schemas.py, whose field rules
and bounds it shares) and then mapped to one (facade/responses_input.py). Input items are
messages (roles user, system, developer, assistant; text parts `input_text` / `output_text`),
`function_call` (a call the model made, as a previous response returned it) and
`function_call_output` (its result); other item types, non-text parts and non-function tools
are refused with the parameter named. The reply models document the `response` object and
validate whole replies; stream events are written by facade/responses_output.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from facade.schemas import (
    UINT32_MAX,
    Name,
    StrictModel,
    bounded_schema,
    by_shape,
    join_text_parts,
    json_object_text,
)
from tensorchat.limits import MAX_TOOLS

# The content part types that carry text: what the client wrote, and what a model answered
# (an earlier response's output fed back as input).
TEXT_PARTS = {"input_text", "output_text"}
MAX_METADATA = 16


def _text_content(value: Any) -> Any:
    return join_text_parts(value, TEXT_PARTS)


class InputMessage(StrictModel):
    """A message item; `type` may be left out (OpenAI's "easy input message")."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str

    _content = field_validator("content", mode="before")(_text_content)


class FunctionCallItem(StrictModel):
    """A call the model made: an earlier response's `function_call` output item."""

    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: Name
    # JSON text of the arguments object, as the server returned it.
    arguments: str

    _arguments = field_validator("arguments")(json_object_text)


class FunctionCallOutputItem(StrictModel):
    """The result of the call `call_id`, which an earlier item of the input made."""

    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1)]
    output: str

    _output = field_validator("output", mode="before")(_text_content)


# Tags are capitalised so that an error's location names the parameter alone (errors.py).
_ITEM_TAGS = {
    "message": "Message",
    "function_call": "FunctionCall",
    "function_call_output": "FunctionCallOutput",
}


def _item_tag(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "")
    # A `type` that is not a string is no supported item (a dict would not even hash).
    return _ITEM_TAGS.get(kind) if isinstance(kind, str) else None


InputItem = Annotated[
    Annotated[InputMessage, Tag("Message")]
    | Annotated[FunctionCallItem, Tag("FunctionCall")]
    | Annotated[FunctionCallOutputItem, Tag("FunctionCallOutput")],
    Discriminator(
        _item_tag,
        custom_error_type="unsupported_item",
        custom_error_message=(
            "the supported item types are 'message', 'function_call' and 'function_call_output'"
        ),
    ),
]


def _text_or_items(value: Any) -> str:
    return "Text" if isinstance(value, str) else "Items"


# Tagged so that an item's error names the item (input[2].content), not the string branch.
Input = Annotated[
    Annotated[str, Tag("Text")] | Annotated[list[InputItem], Tag("Items")],
    Discriminator(_text_or_items),
]


class FunctionToolSpec(StrictModel):
    """A function tool in the Responses API's flat shape (no nested `function`)."""

    type: Literal["function"]
    name: Name
    description: str | None = None
    parameters: dict[str, Any] | None = None
    # The Responses API's default is strict (the chat API's is not).
    strict: bool | None = True

    _parameters = field_validator("parameters")(bounded_schema)


class NamedFunction(StrictModel):
    """tool_choice {"type": "function", "name": ...}: call this function."""

    type: Literal["function"]
    name: Name


ResponsesToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("Mode")]
    | Annotated[NamedFunction, Tag("Named")],
    Discriminator(by_shape),
]


class TextFormat(StrictModel):
    """`text.format`: text (the default), json_object, or json_schema with its fields flat."""

    type: Literal["text", "json_object", "json_schema"]
    name: Name | None = None
    description: str | None = None
    # `schema` would shadow a BaseModel attribute; the wire name is the alias.
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None

    _schema = field_validator("schema_")(bounded_schema)

    @model_validator(mode="after")
    def _json_schema_fields(self) -> TextFormat:
        if self.type == "json_schema":
            if self.name is None:
                raise ValueError("type 'json_schema' needs a 'name'")
            if self.schema_ is None:
                raise ValueError("type 'json_schema' needs a 'schema'")
        elif self.schema_ is not None or self.name is not None:
            raise ValueError(
                f"'name' and 'schema' are only allowed with type 'json_schema', not {self.type!r}"
            )
        return self


class TextConfig(StrictModel):
    format: TextFormat | None = None


class ResponsesRequest(StrictModel):
    """POST /v1/responses body."""

    model: Annotated[str, Field(min_length=1)]
    input: Input
    # A system message before the input; not carried over by `previous_response_id`.
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    text: TextConfig | None = None
    tools: Annotated[list[FunctionToolSpec], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ResponsesToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    # None: not sent. OpenAI's default is to store; this server stores only with Redis
    # (facade/response_store.py).
    store: bool | None = None
    previous_response_id: Annotated[str, Field(min_length=1)] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    # Refused when asked for (facade/responses_input.py): they need server-side state or
    # work this server does not keep.
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > MAX_METADATA:
            raise ValueError(f"at most {MAX_METADATA} key-value pairs are allowed")
        return value

    @property
    def items(self) -> list[InputMessage | FunctionCallItem | FunctionCallOutputItem]:
        """The input as items: a string is one user message."""
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return list(self.input)

    @property
    def format(self) -> TextFormat:
        if self.text is None or self.text.format is None:
            return TextFormat(type="text")
        return self.text.format


# Replies --------------------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    # JSON text; a whole object unless the response ended early (status incomplete).
    arguments: str
    status: ItemStatus


OutputItem = Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseErrorInfo(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """The `response` object: a whole reply, and the snapshot in lifecycle stream events."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    error: ResponseErrorInfo | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    temperature: float | None
    top_p: float | None
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None
    user: str | None
    metadata: dict[str, str]
    store: bool


ResponseEventType = Literal[
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
]


class ResponseStreamEvent(BaseModel):
    """One typed event of a streamed response (facade/responses_output.py writes them): its
    `type` decides which of the other fields it carries, as in OpenAI's event types."""

    type: ResponseEventType
    sequence_number: int
    # response.created / in_progress / completed / incomplete / failed: the snapshot.
    response: ResponseObject | None = None
    # response.output_item.added / done.
    item: OutputItem | None = None
    output_index: int | None = None
    # The text and call events: the item they build, and the part of a message.
    item_id: str | None = None
    content_index: int | None = None
    part: OutputText | None = None
    delta: str | None = None  # output_text.delta, function_call_arguments.delta
    text: str | None = None  # output_text.done
    arguments: str | None = None  # function_call_arguments.done
    logprobs: list[Any] | None = None
    # error: the error envelope's fields.
    code: str | None = None
    message: str | None = None
    param: str | None = None
