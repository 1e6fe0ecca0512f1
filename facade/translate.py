"""OpenAI request -> GenerateRequest, and Generate responses -> OpenAI completions and chunks.

Streaming is the hot path (hundreds of streams, tens of thousands of tokens a second on a
couple of cores), so a chunk is never built as a pydantic model or a dict: the constant
head of every chunk (id, object, created, model, fingerprint) is serialised once per
request and each delta only adds its index and JSON-escaped text (the C string encoder of
the standard `json` module). Tool calls map to the request's Tools and back through
facade/tool_rules.py (history) and facade/tool_output.py (calls the model made).

Finish reasons. OpenAI clients accept `stop`, `length`, `tool_calls`, `content_filter` and
`function_call`. EOS, a stop string and a stop token are `stop`. `length` covers max_tokens
and the context limit, and also the two ways a completion is cut short before the model
ended it: the request's time limit and a cancellation by the server (draining). Both leave a
truncated answer, which is exactly what clients take `length` to mean (vLLM's "abort" is
not a value OpenAI SDKs or LangChain expect). A choice that made tool calls ends with
`tool_calls` (`function_call` for a legacy `functions` request).
"""

from __future__ import annotations

import abc
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from facade.errors import APIError
from facade.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    FunctionDefinition,
    GenerationFields,
    ResponseFormat,
)
from facade.sse import DONE, error_event
from facade.tool_output import CallAssembler, delta_fields
from facade.tool_rules import (
    CallRef,
    answered_calls,
    call_ids,
    has_tool_history,
    offered_functions,
)
from tensorchat.v1 import inference_pb2 as pb

_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]

FINISH_REASONS: dict[int, str] = {
    pb.FINISH_REASON_UNSPECIFIED: "stop",
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_STOP_SEQUENCE: "stop",
    pb.FINISH_REASON_STOP_TOKEN: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TIME_LIMIT: "length",
    pb.FINISH_REASON_CANCELLED: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}

# OpenAI reports impossible tokens as -9999.0; JSON has no -Infinity.
_MIN_LOGPROB = -9999.0
_UINT64 = 1 << 64
_ROLES = {"developer": "system", "function": "tool"}
_CHOICE_MODES = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
    "function": pb.TOOL_CHOICE_MODE_FUNCTION,
}
# OpenAI: "Omitting `parameters` defines a function with an empty parameter list."
_NO_PARAMETERS = json.dumps({"type": "object", "properties": {}, "additionalProperties": False})


def to_generate_request(
    req: ChatCompletionRequest,
    model_id: str,
    request_id: str,
    *,
    time_limit_ms: int = 0,
) -> pb.GenerateRequest:
    """The Generate RPC for an OpenAI chat request (already validated by the schema)."""
    rpc = pb.GenerateRequest(
        request_id=request_id,
        model=model_id,
        n=req.n,
        logprobs=bool(req.logprobs),
        top_logprobs=(req.top_logprobs or 0) if req.logprobs else 0,
        # The facade returns text only; token ids would just cost bytes on the wire.
        output=pb.OUTPUT_MODE_TEXT,
    )
    # Filled in place: a sub-message passed to a constructor is copied (the three
    # sub-messages and every chat message), a third of this function's cost per request.
    _fill_messages(rpc.messages, req)
    _fill_sampling(rpc.sampling, req)
    _fill_stopping(rpc.stopping, req, time_limit_ms)
    functions = offered_functions(req)
    if functions:
        _fill_tools(rpc.tools, req, functions)
    if req.response_format is not None and req.response_format.type != "text":
        _fill_constraint(rpc.constraint, req.response_format)
    return rpc


# The request fields the service names by their protocol name, and the OpenAI parameter each
# comes from (every other name the service uses is already OpenAI's: `messages[2].content`,
# `tools[0].function.parameters`, `tool_choice`, `max_tokens`, ...).
_PROTOCOL_PARAMS = {"constraint": "response_format"}
# A legacy `functions` request sent its functions as tools (see _fill_tools).
_LEGACY_PARAM = re.compile(r"^tools(\[\d+\])(?:\.function)?")
# A Responses API request (facade/responses_input.py) names the chat request's fields its own
# way: its messages are items (`item_params`), its tools are flat, its format is `text.format`.
_RESPONSES_PARAMS = {
    "constraint": "text.format",
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "messages": "input",
}
_MESSAGE_PARAM = re.compile(r"^messages\[(\d+)\]")
_TOOL_FUNCTION_PARAM = re.compile(r"^(tools\[\d+\])\.function")


def openai_param(param: str, req: GenerationFields) -> str:
    """The OpenAI parameter behind a field the service refused (its INVALID_ARGUMENT `param`),
    as the client wrote `req`: `constraint` -> `response_format`; for a legacy `functions`
    request `tools[1].function.parameters` -> `functions[1].parameters`, `tool_choice` ->
    `function_call`; for a Responses API request `messages[3].content` -> the item the
    message came from (`input[2]`, `instructions`), `constraint` -> `text.format`,
    `tools[1].function.parameters` -> `tools[1].parameters`, `max_tokens` ->
    `max_output_tokens`."""
    if req.item_params is not None:
        return _responses_param(param, req.item_params)
    head, dot, rest = param.partition(".")
    if head in _PROTOCOL_PARAMS:
        return _PROTOCOL_PARAMS[head] + dot + rest
    if req.legacy_functions:
        if param == "tool_choice":
            return "function_call"
        if param == "tools":
            return "functions"
        return _LEGACY_PARAM.sub(lambda m: f"functions{m.group(1)}", param, count=1)
    return param


def _responses_param(param: str, item_params: Sequence[str]) -> str:
    message = _MESSAGE_PARAM.match(param)
    if message:
        index = int(message.group(1))
        # The item's own fields are not the message's: the item is named whole.
        return item_params[index] if index < len(item_params) else "input"
    head, dot, rest = param.partition(".")
    if head in _RESPONSES_PARAMS:
        return _RESPONSES_PARAMS[head] + dot + rest
    return _TOOL_FUNCTION_PARAM.sub(lambda m: m.group(1), param, count=1)


def to_prompt_requests(
    req: CompletionRequest, model_id: str, request_id: str, *, time_limit_ms: int = 0
) -> list[pb.GenerateRequest]:
    """One Generate RPC per prompt of a text completions request (the service takes one
    prompt per request; the facade runs them side by side and numbers the choices)."""
    rpcs = []
    prompts = req.prompts
    for i, prompt in enumerate(prompts):
        rpc = pb.GenerateRequest(
            # Distinct ids: the generations share the backend's namespace of running ids.
            request_id=request_id if len(prompts) == 1 else f"{request_id}-{i}",
            model=model_id,
            n=req.n,
            logprobs=req.logprobs is not None,
            top_logprobs=req.logprobs or 0,
            echo=req.echo,
            output=pb.OUTPUT_MODE_TEXT,
        )
        if isinstance(prompt, str):
            rpc.prompt = prompt
        else:
            rpc.token_ids.ids.extend(prompt)
        _fill_sampling(rpc.sampling, req)
        _fill_stopping(rpc.stopping, req, time_limit_ms)
        rpcs.append(rpc)
    return rpcs


def _fill_messages(messages: pb.ChatMessages, req: ChatCompletionRequest) -> None:
    messages.SetInParent()  # selects the `input` oneof
    add = messages.messages.add
    history = req.messages
    if not has_tool_history(history):
        for m in history:  # the common case, kept lean
            add(role=_ROLES.get(m.role, m.role), content=m.content)
        return
    for i, (m, answers) in enumerate(zip(history, answered_calls(history), strict=True)):
        _fill_message(add(role=_ROLES.get(m.role, m.role), content=m.content), m, i, answers)


def _fill_message(
    message: pb.ChatMessage, m: ChatMessage, index: int, answers: CallRef | None
) -> None:
    """The tool parts of one history message: an assistant's calls, or a tool's result."""
    if answers is not None:
        message.tool_call_id = answers.id
        # The template may show which function answered; the call says it when the client
        # (OpenAI's tool messages have no name) did not.
        message.name = m.name or answers.name
        return
    for call_id, call in zip(call_ids(m, index), m.calls, strict=True):
        message.tool_calls.add(id=call_id, name=call.name, arguments=call.arguments)


def _fill_tools(
    tools: pb.Tools, req: ChatCompletionRequest, functions: list[FunctionDefinition]
) -> None:
    for function in functions:
        tools.tools.add(
            name=function.name,
            description=function.description or "",
            parameters=(
                _NO_PARAMETERS if function.parameters is None else json.dumps(function.parameters)
            ),
            strict=bool(function.strict),
        )
    mode, name = req.choice
    tools.choice.mode = _CHOICE_MODES[mode]
    tools.choice.function_name = name
    if req.legacy_functions:
        tools.parallel_tool_calls = False  # `function_call` is one call
    elif req.parallel_tool_calls is not None:
        tools.parallel_tool_calls = req.parallel_tool_calls


def _fill_constraint(constraint: pb.OutputConstraint, response_format: ResponseFormat) -> None:
    if response_format.type == "json_object":
        constraint.json_object.SetInParent()
        return
    spec = response_format.json_schema
    assert spec is not None  # the schema requires it with type json_schema
    # No schema: any JSON value, as OpenAI's optional `schema` leaves it.
    constraint.json_schema = json.dumps({} if spec.schema_ is None else spec.schema_)
    constraint.strict = bool(spec.strict)


def _fill_sampling(sampling: pb.SamplingParams, req: GenerationFields) -> None:
    sampling.SetInParent()  # present even when every field keeps its default
    sampling.presence_penalty = req.presence_penalty or 0.0
    sampling.frequency_penalty = req.frequency_penalty or 0.0
    sampling.min_p = req.min_p or 0.0
    # vLLM's -1 and 0 both mean "no top-k".
    sampling.top_k = max(req.top_k or 0, 0)
    if req.temperature is not None:
        sampling.temperature = req.temperature
    if req.top_p is not None:
        if req.top_p == 0.0:
            # The smallest set whose mass reaches 0 is the single most likely token: top-k 1.
            # (The service wants top_p in (0, 1]; OpenAI accepts 0.)
            sampling.top_k = 1
        else:
            sampling.top_p = req.top_p
    if req.seed is not None:
        # Two's complement keeps negative seeds deterministic in the proto's uint64.
        sampling.seed = req.seed % _UINT64
    if req.repetition_penalty is not None:
        sampling.repetition_penalty = req.repetition_penalty
    if req.logit_bias:
        sampling.logit_bias.update({int(k): v for k, v in req.logit_bias.items()})


def _fill_stopping(
    stopping: pb.StoppingCriteria, req: GenerationFields, time_limit_ms: int
) -> None:
    stopping.SetInParent()
    stopping.min_tokens = req.min_tokens
    stopping.stop.extend(req.stop_list)
    stopping.stop_token_ids.extend(req.stop_token_ids or [])
    stopping.ignore_eos = req.ignore_eos
    stopping.time_limit_ms = time_limit_ms
    if req.completion_limit is not None:
        stopping.max_tokens = req.completion_limit


def finish_reason(reason: int, legacy_functions: bool) -> str:
    """OpenAI's finish reason; a `functions` request's calls end with "function_call"."""
    name = FINISH_REASONS.get(reason, "stop")
    return "function_call" if legacy_functions and name == "tool_calls" else name


def logprob_value(value: float) -> float:
    """A logprob JSON can carry: OpenAI's -9999.0 for impossible tokens (no -Infinity, NaN)."""
    return value if value > _MIN_LOGPROB and not math.isnan(value) else _MIN_LOGPROB


def _token_bytes(token: str, raw: bytes) -> list[int]:
    return list(raw) if raw else list(token.encode("utf-8"))


def logprobs_content(items: Any) -> list[dict[str, Any]]:
    """Proto TokenLogprobs -> OpenAI `logprobs.content` entries."""
    return [
        {
            "token": lp.token,
            "logprob": logprob_value(lp.logprob),
            "bytes": _token_bytes(lp.token, lp.bytes),
            "top_logprobs": [
                {
                    "token": top.token,
                    "logprob": logprob_value(top.logprob),
                    "bytes": _token_bytes(top.token, top.bytes),
                }
                for top in lp.top_logprobs
            ],
        }
        for lp in items
    ]


class UsageCounter:
    """Usage summed over choices: each prompt once, completions of every choice.

    A text completions request may carry several prompts (`prompt`, the index of the one a
    choice answers); their choices share nothing, so their prompt tokens add up.
    """

    __slots__ = ("_cached", "_prompts", "completion_tokens")

    def __init__(self) -> None:
        self._prompts: dict[int, int] = {}
        self._cached: dict[int, int] = {}
        self.completion_tokens = 0

    def add(self, usage: pb.Usage, prompt: int = 0) -> None:
        self._prompts[prompt] = max(self._prompts.get(prompt, 0), usage.prompt_tokens)
        self._cached[prompt] = max(self._cached.get(prompt, 0), usage.cached_tokens)
        self.completion_tokens += usage.completion_tokens

    @property
    def prompt_tokens(self) -> int:
        return sum(self._prompts.values())

    @property
    def cached_tokens(self) -> int:
        return sum(self._cached.values())

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


class ChunkFrame:
    """The constant bytes of every chunk of one stream, serialised once per request: the head
    up to a choice's index, the usage chunk's head, and the close (with include_usage every
    chunk carries "usage": null until the last one, as OpenAI sends it)."""

    __slots__ = ("_include_usage", "close", "head", "usage_head")

    def __init__(
        self,
        kind: str,
        completion_id: str,
        created: int,
        model: str,
        fingerprint: str,
        include_usage: bool,
    ) -> None:
        common = (
            f'{{"id":{_encode_str(completion_id)},"object":"{kind}",'
            f'"created":{created},"model":{_encode_str(model)},'
            f'"system_fingerprint":{_encode_str(fingerprint)},'
        )
        self.head = f'data: {common}"choices":[{{"index":'.encode()
        self.usage_head = f'data: {common}"choices":[],"usage":'.encode()
        self.close = b"]" + (b',"usage":null' if include_usage else b"") + b"}\n\n"
        self._include_usage = include_usage

    def usage(self, usage: UsageCounter) -> bytes:
        return self.usage_head + json.dumps(usage.to_json()).encode() + b"}\n\n"

    def end(self, usage: UsageCounter) -> bytes:
        """The stream's end: with include_usage the usage chunk, then `[DONE]`."""
        return self.usage(usage) + DONE if self._include_usage else DONE


class DataStream:
    """The frame of a data-only stream of chunks (chat and text completions): nothing before
    the first chunk, the usage chunk and `[DONE]` at the end, an error as one more `data:`
    event and `[DONE]` (facade/sse.py)."""

    __slots__ = ("_frame",)

    _frame: ChunkFrame

    def start(self) -> bytes:
        return b""

    def end(self, usage: UsageCounter) -> bytes:
        return self._frame.end(usage)

    def error(self, error: APIError) -> bytes:
        return error_event(error) + DONE

    def usage(self, usage: UsageCounter) -> bytes:
        return self._frame.usage(usage)


class ChunkEncoder(DataStream):
    """Byte-level `data: {...}\\n\\n` chunks for one streaming request.

    A choice's first chunk carries the role: with `content: ""` before text, or, as OpenAI
    sends it, with `content: null` and the first piece of a call when the choice opens with
    a tool call (so the SDK's stream helper rebuilds the non-streaming message exactly).
    Choices first appear in index order: the openai SDK's stream helper takes the first
    chunk's choices as a list indexed by `index`, and appends each later new choice
    (openai/lib/streaming/chat/_completions.py, `_convert_initial_chunk_into_snapshot` and
    `_accumulate_chunk`), so a choice that streams before an earlier one has opened sends a
    bare role chunk for that one first.
    """

    __slots__ = ("_close", "_head", "_legacy", "_opened", "_tail", "_want_logprobs")

    def __init__(
        self,
        completion_id: str,
        created: int,
        model: str,
        fingerprint: str,
        include_usage: bool,
        *,
        n: int = 1,
        want_logprobs: bool = False,
        legacy_functions: bool = False,
    ) -> None:
        frame = self._frame = ChunkFrame(
            "chat.completion.chunk", completion_id, created, model, fingerprint, include_usage
        )
        self._head, self._close = frame.head, frame.close
        self._tail = b'"logprobs":null,"finish_reason":null}' + self._close
        self._opened = [False] * n
        self._want_logprobs = want_logprobs
        self._legacy = legacy_functions

    def response(self, message: pb.GenerateResponse) -> bytes:
        """The chunks for one message of the generation (b"" when it has nothing to send)."""
        index = message.index
        out = b"" if self._opened[index] else self._open_earlier(index)
        if message.HasField("finished"):
            reason = finish_reason(message.finished.reason, self._legacy)
            return out + self._open(index) + self.finish(index, reason)
        delta = message.delta
        if delta.text or delta.logprobs:
            lps = logprobs_content(delta.logprobs) if self._want_logprobs else None
            out += self._open(index) + self.content(index, delta.text, lps)
        if delta.tool_calls:
            opening = not self._opened[index]
            self._opened[index] = True
            out += self.tool_calls(index, delta.tool_calls, opening=opening)
        return out

    def _open_earlier(self, index: int) -> bytes:
        """Role-only chunks for the choices before `index` that have not streamed yet (their
        content, text or calls, comes in their own later chunks)."""
        out = b""
        for earlier in range(index):
            if not self._opened[earlier]:
                self._opened[earlier] = True
                out += b'%s%d,"delta":{"role":"assistant"},%s' % (self._head, earlier, self._tail)
        return out

    def _open(self, index: int) -> bytes:
        if self._opened[index]:
            return b""
        self._opened[index] = True
        return self.role(index)

    def role(self, index: int) -> bytes:
        return (
            b'%s%d,"delta":{"role":"assistant","content":""},"logprobs":null,'
            b'"finish_reason":null}%s' % (self._head, index, self._close)
        )

    def content(self, index: int, text: str, logprobs: list[dict[str, Any]] | None) -> bytes:
        lp = b"null" if logprobs is None else _logprobs_json(logprobs)
        return b'%s%d,"delta":{"content":%s},"logprobs":%s,"finish_reason":null}%s' % (
            self._head,
            index,
            _encode_str(text).encode(),
            lp,
            self._close,
        )

    def tool_calls(self, index: int, pieces: Sequence[pb.ToolCallDelta], *, opening: bool) -> bytes:
        role = b'"role":"assistant","content":null,' if opening else b""
        return b'%s%d,"delta":{%s%s},"logprobs":null,"finish_reason":null}%s' % (
            self._head,
            index,
            role,
            delta_fields(pieces, self._legacy),
            self._close,
        )

    def finish(self, index: int, reason: str) -> bytes:
        return b'%s%d,"delta":{},"logprobs":null,"finish_reason":"%s"}%s' % (
            self._head,
            index,
            reason.encode(),
            self._close,
        )


def _logprobs_json(content: list[dict[str, Any]]) -> bytes:
    return json.dumps({"content": content, "refusal": None}, ensure_ascii=False).encode()


class ChoicesBuilder(abc.ABC):
    """Collects a non-streaming request's responses, choice by choice, into one completion
    object: the envelope, finish reasons and usage are shared; each object's subclass keeps
    what a delta adds to a choice (`_add_delta`) and how a choice is written (`_choice`)."""

    object_name = ""

    def __init__(self, choices: int, per_prompt: int, legacy_functions: bool = False) -> None:
        self._finish: list[str | None] = [None] * choices
        self._per_prompt = per_prompt  # choices per prompt: usage counts each prompt once
        self._legacy = legacy_functions
        self.usage = UsageCounter()

    def add(self, response: pb.GenerateResponse) -> None:
        index = response.index
        if response.HasField("delta"):
            self._add_delta(index, response.delta)
        elif response.HasField("finished"):
            self._finish[index] = finish_reason(response.finished.reason, self._legacy)
            self.usage.add(response.finished.usage, index // self._per_prompt)

    @abc.abstractmethod
    def _add_delta(self, index: int, delta: pb.Delta) -> None: ...

    @abc.abstractmethod
    def _choice(self, index: int, reason: str) -> dict[str, Any]: ...

    def to_json(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": self.object_name,
            "created": created,
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": [self._choice(i, reason or "stop") for i, reason in enumerate(self._finish)],
            "usage": self.usage.to_json(),
        }


class CompletionBuilder(ChoicesBuilder):
    """A `chat.completion` object: each choice's message (text, tool calls) and logprobs."""

    object_name = "chat.completion"

    def __init__(self, n: int, want_logprobs: bool, legacy_functions: bool = False) -> None:
        super().__init__(n, n, legacy_functions)
        self._texts: list[list[str]] = [[] for _ in range(n)]
        self._calls = [CallAssembler() for _ in range(n)]
        self._logprobs: list[list[dict[str, Any]]] | None = (
            [[] for _ in range(n)] if want_logprobs else None
        )

    def _add_delta(self, index: int, delta: pb.Delta) -> None:
        if delta.text:
            self._texts[index].append(delta.text)
        if delta.tool_calls:
            self._calls[index].add(delta.tool_calls)
        if self._logprobs is not None and delta.logprobs:
            self._logprobs[index].extend(logprobs_content(delta.logprobs))

    def _message(self, index: int) -> dict[str, Any]:
        text, calls = "".join(self._texts[index]), self._calls[index]
        # OpenAI: content is null when the model only called tools.
        message = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
        message.update(calls.message_fields(self._legacy))
        return message

    def _choice(self, index: int, reason: str) -> dict[str, Any]:
        logprobs = self._logprobs
        return {
            "index": index,
            "message": self._message(index),
            "logprobs": (
                {"content": logprobs[index], "refusal": None} if logprobs is not None else None
            ),
            "finish_reason": reason,
        }
