"""Turns a GenerateRequest into an engine request: resolve, validate, tokenize, apply limits.

Every refusal is a `RequestError` naming the OpenAI-style parameter at fault, so internal callers
and the facade get the same clear message.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.choices import Echo
from inference.engines.base import EngineRequest, unpaced
from inference.errors import RequestError, invalid, model_not_found
from inference.grammar import CompiledConstraint, ConstraintError, GrammarSpec
from inference.registry import ModelRegistry, ServedModel
from inference.sampling import SamplingParams
from inference.text.tokenizer import ChatTemplateError
from inference.tool_grammar import tool_call_grammar
from inference.tool_request import ToolUse, chat_messages, tool_use
from tensorchat.limits import MAX_CHOICES, MAX_TOP_LOGPROBS
from tensorchat.v1 import inference_pb2 as pb

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 512
MAX_LOGIT_BIAS = 100.0
# A prompt longer than max_input_tokens x this many characters cannot fit whatever the
# tokenizer: real text averages 3-5 characters per token, and even a prompt made only of a
# vocabulary's longest tokens (runs of spaces or dashes) stays under 32 over its length. So
# it is refused by its length alone, before templating and tokenizing cost seconds of CPU.
MAX_PROMPT_CHARS_PER_TOKEN = 32
# Prompt ids the detokenizer of a raw prompt's continuation starts from (RequestPlan.continues).
_CONTINUED_IDS = 4
# `OutputMode.values()` builds a list on every call (1 µs per request).
_OUTPUT_MODES = frozenset(pb.OutputMode.values())


@dataclass(frozen=True, slots=True)
class RequestPlan:
    model: ServedModel
    engine_request: EngineRequest
    stops: tuple[str, ...]
    output: pb.OutputMode.ValueType
    # The tools the model may call; the choices' text is read for calls when the choice is not
    # "none".
    tools: ToolUse | None = None
    # The grammar of the tool calls (compiled into the EngineRequest's constraint).
    tool_grammar: GrammarSpec | None = None

    @property
    def reads_tool_calls(self) -> bool:
        return self.tool_grammar is not None

    # GenerateRequest.echo. With max_tokens 0 (Echo.only) the engine still generates one
    # token (engines need one), which the client never sees.
    echo: Echo | None = None
    raw_prompt: bool = False  # a prompt or token ids, not messages

    @property
    def prompt_tokens(self) -> int:
        return len(self.engine_request.prompt_token_ids)

    @property
    def continues(self) -> list[int]:
        """What the generated text continues: a raw prompt's last ids (a chat answer starts
        text of its own). A few give the decoder the context a full decode would have."""
        if self.raw_prompt:
            return self.engine_request.prompt_token_ids[-_CONTINUED_IDS:]
        return []


def resolve_model(registry: ModelRegistry, name: str) -> ServedModel:
    if not name.strip():
        raise invalid("model", "is required")
    model = registry.resolve(name)
    if model is None:
        raise model_not_found(name)
    return model


def prompt_token_ids(
    model: ServedModel,
    request: pb.GenerateRequest | pb.TokenizeRequest,
    tools: ToolUse | None = None,
) -> list[int]:
    """The prompt exactly as the engine will see it (shared by Generate and Tokenize);
    `tools`: the request's validated tools, shown in the prompt."""
    kind = request.WhichOneof("input")
    _refuse_oversize(model, request)
    if kind == "messages":
        return _encode_messages(model, request.messages.messages, tools)
    if kind == "prompt":
        if not request.prompt:
            raise invalid("prompt", "must not be empty")
        return model.tokenizer.encode_prompt(request.prompt)
    if kind == "token_ids":
        assert isinstance(request, pb.GenerateRequest)
        ids = list(request.token_ids.ids)
        if not ids:
            raise invalid("token_ids", "must not be empty")
        vocab = model.tokenizer.vocab_size
        bad = next((i for i in ids if i >= vocab), None)
        if bad is not None:
            raise invalid("token_ids", f"token id {bad} is outside the vocabulary (size {vocab})")
        return ids
    raise invalid("messages", "one of messages, prompt or token_ids is required")


def _refuse_oversize(model: ServedModel, request: pb.GenerateRequest | pb.TokenizeRequest) -> None:
    """Refuses input that cannot fit the context, by its length alone (see the bound above)."""
    kind = request.WhichOneof("input")
    if kind == "messages":
        size = sum(len(m.content) for m in request.messages.messages)
    elif kind == "prompt":
        size = len(request.prompt)
    else:
        return  # token ids: counted exactly, and as cheaply, by _max_tokens
    longest = model.max_input_tokens
    if size > longest * MAX_PROMPT_CHARS_PER_TOKEN:
        param = _input_param(request)
        holds = "hold" if param == "messages" else "holds"
        raise invalid(
            param,
            f"{_overflow_head(param, model.context_length, longest)}. However, your {param} "
            f"{holds} {size} characters, more than any {longest} tokens can. "
            f"Please reduce the length of the {param}.",
            code="context_length_exceeded",
        )


def _encode_messages(
    model: ServedModel, messages: Sequence[pb.ChatMessage], tools: ToolUse | None
) -> list[int]:
    try:
        return model.tokenizer.encode_chat(chat_messages(messages), tools.tools if tools else ())
    except ChatTemplateError as error:
        raise invalid("messages", str(error)) from error


# Runs a preparation step (templating, tokenizing) somewhere, e.g. on a thread pool.
OffLoop = Callable[..., Awaitable[Any]]


async def _on_loop(step: Callable[..., Any], *args: Any) -> Any:
    return step(*args)


async def build_plan(
    registry: ModelRegistry,
    request: pb.GenerateRequest,
    pace: Callable[[], float] = unpaced,
    off_loop: OffLoop = _on_loop,
) -> RequestPlan:
    """`pace` is the servicer's pacing of this stream (see `EngineRequest.pace`).

    Templating and tokenizing run through `off_loop` (the runner's preparation threads: a long
    prompt costs up to seconds of CPU, and the tokenizers library releases the GIL while it
    encodes); a constraint's grammar compiles on the compiler's own threads, bounded in time.
    """
    model = resolve_model(registry, request.model)
    stopping = request.stopping
    n = request.n or 1
    if n > MAX_CHOICES:
        raise invalid("n", f"must be at most {MAX_CHOICES}, got {n}")
    stops = _validate_stops(list(stopping.stop))
    if request.output not in _OUTPUT_MODES:
        # proto3 enums are open: an unknown number parses, and would be served as text.
        raise invalid("output", f"unknown output mode {request.output}")
    tools = _tool_use(request)
    _check_echo(model, request)
    prompt = await off_loop(prompt_token_ids, model, request, tools)
    max_tokens = _max_tokens(model, request, len(prompt))
    params = _sampling_params(model, request, n, max(max_tokens, 1))
    if stopping.min_tokens > max_tokens:
        raise invalid(
            "min_tokens", f"({stopping.min_tokens}) must not exceed max_tokens ({max_tokens})"
        )
    tool_grammar = tool_call_grammar(model.tokenizer.tool_format.syntax, tools) if tools else None
    constraint = await _compile_constraint(model, request, params, tool_grammar)
    echo = None
    if request.echo:
        # Token ids decode to the text they echo: on the preparation threads, like encoding.
        text = await off_loop(_echo_text, model, request, prompt)
        echo = Echo(text, prompt[0], only=max_tokens == 0)
    deadline = time.monotonic() + stopping.time_limit_ms / 1000 if stopping.time_limit_ms else None
    return RequestPlan(
        model=model,
        engine_request=EngineRequest(
            request_id=request.request_id or f"req-{uuid.uuid4().hex}",
            prompt_token_ids=prompt,
            params=params,
            eos_token_ids=model.tokenizer.eos_token_ids,
            deadline=deadline,
            pace=pace,
            constraint=constraint,
        ),
        stops=stops,
        output=request.output,
        tools=tools,
        tool_grammar=tool_grammar,
        echo=echo,
        raw_prompt=request.WhichOneof("input") != "messages",
    )


def _tool_use(request: pb.GenerateRequest) -> ToolUse | None:
    """The request's validated tools, if it offers any."""
    tools = tool_use(request)
    if tools is None:
        return None
    if request.WhichOneof("input") != "messages":
        raise invalid("tools", "tools need messages (a chat), not a raw prompt")
    if request.HasField("constraint"):
        # One grammar per choice: it either calls functions or answers in the format (the
        # facade refuses the same pair naming response_format).
        raise invalid(
            "constraint", "cannot be combined with tools; offer the output format as a tool"
        )
    return tools


def _check_echo(model: ServedModel, request: pb.GenerateRequest) -> None:
    if not request.echo:
        return
    if request.WhichOneof("input") == "messages":
        raise invalid("echo", "is for a prompt (completions), not for messages")
    if request.logprobs:
        refusal = model.engine.prompt_logprobs_refusal()
        if refusal is not None:
            raise invalid("echo", f"with logprobs needs the prompt's log probabilities: {refusal}")


def _echo_text(model: ServedModel, request: pb.GenerateRequest, prompt: list[int]) -> str:
    if request.WhichOneof("input") == "prompt":
        return request.prompt
    return str(model.tokenizer.hf.decode(prompt, skip_special_tokens=False))


def constraint_spec(constraint: pb.OutputConstraint) -> GrammarSpec | None:
    """The grammar an OutputConstraint asks for (None when it names none)."""
    kind = constraint.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "json_object":
        return GrammarSpec("json_object")
    if kind == "grammar":
        return GrammarSpec("ebnf", constraint.grammar)
    if kind == "json_schema":
        return GrammarSpec("json_schema", constraint.json_schema)
    return GrammarSpec("regex", constraint.regex)


async def _compile_constraint(
    model: ServedModel,
    request: pb.GenerateRequest,
    params: SamplingParams,
    tool_grammar: GrammarSpec | None,
) -> CompiledConstraint | None:
    """The grammar of the output: the tool calls' (tool_choice other than none), or the
    requested constraint's; None when the output is free."""
    if tool_grammar is not None:
        param, spec, what = "tools", tool_grammar, "tool calls"
    elif request.HasField("constraint"):
        param, what = "constraint", "a constraint"
        found = constraint_spec(request.constraint)
        if found is None:
            raise invalid(param, "name one of json_object, json_schema, regex or grammar")
        spec = found
    else:
        return None
    if not model.engine.constrains_output:
        engine = model.engine.name
        raise invalid(param, f"the {engine} engine of {model.id} cannot constrain output")
    # Both would fight the grammar over the end of the output: the grammar only allows EOS
    # where it may end, ignore_eos never ends there, min_tokens could forbid the only choice.
    if params.ignore_eos:
        raise invalid("ignore_eos", f"cannot be combined with {what}")
    if params.min_tokens:
        raise invalid("min_tokens", f"cannot be combined with {what}")
    try:
        return await model.grammar.compile(spec)
    except ConstraintError as error:
        raise invalid(param, str(error)) from None


def _sampling_params(
    model: ServedModel, request: pb.GenerateRequest, n: int, max_tokens: int
) -> SamplingParams:
    sampling, stopping, defaults = request.sampling, request.stopping, model.config.defaults
    temperature = sampling.temperature if sampling.HasField("temperature") else defaults.temperature
    _check_range("temperature", temperature, 0.0, 2.0)
    top_p = sampling.top_p if sampling.HasField("top_p") else defaults.top_p
    if not (0.0 < top_p <= 1.0) or math.isnan(top_p):
        raise invalid("top_p", f"must be in (0, 1], got {top_p:g}")
    min_p = sampling.min_p or defaults.min_p
    _check_range("min_p", min_p, 0.0, 1.0)
    repetition_penalty = (
        sampling.repetition_penalty
        if sampling.HasField("repetition_penalty")
        else defaults.repetition_penalty
    )
    if not repetition_penalty > 0.0:
        raise invalid("repetition_penalty", f"must be > 0, got {repetition_penalty:g}")
    _check_range("presence_penalty", sampling.presence_penalty, -2.0, 2.0)
    _check_range("frequency_penalty", sampling.frequency_penalty, -2.0, 2.0)
    vocab = model.tokenizer.vocab_size
    # Copied once and read from the copy: a protobuf map's items() and keys() are Python-level
    # views (collections.abc), 2 µs per request even when the map is empty.
    logit_bias = dict(sampling.logit_bias) if sampling.logit_bias else {}
    for token_id, bias in logit_bias.items():
        if token_id >= vocab:
            raise invalid("logit_bias", f"token id {token_id} is outside the vocabulary ({vocab})")
        _check_range("logit_bias", bias, -MAX_LOGIT_BIAS, MAX_LOGIT_BIAS)
    stop_token_ids: frozenset[int] = frozenset()
    if stopping.stop_token_ids:  # most requests have none (iterating the empty field: 1 µs)
        for token_id in stopping.stop_token_ids:
            if token_id >= vocab:
                raise invalid("stop_token_ids", f"token id {token_id} is outside the vocabulary")
        stop_token_ids = frozenset(stopping.stop_token_ids)
    if request.top_logprobs > MAX_TOP_LOGPROBS:
        raise invalid(
            "top_logprobs", f"must be at most {MAX_TOP_LOGPROBS}, got {request.top_logprobs}"
        )
    if request.top_logprobs and not request.logprobs:
        raise invalid("top_logprobs", "requires logprobs to be true")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=sampling.top_k or defaults.top_k,
        min_p=min_p,
        seed=sampling.seed if sampling.HasField("seed") else None,
        repetition_penalty=repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        logit_bias=logit_bias,
        min_tokens=stopping.min_tokens,
        stop_token_ids=stop_token_ids,
        ignore_eos=stopping.ignore_eos,
        n=n,
        logprobs=request.logprobs,
        top_logprobs=request.top_logprobs,
        prompt_logprobs=request.echo and request.logprobs,
    )


def _max_tokens(model: ServedModel, request: pb.GenerateRequest, prompt_tokens: int) -> int:
    """Requested max_tokens, or "up to the context" when unset; refuses a context overflow."""
    context = model.context_length
    stopping = request.stopping
    if stopping.HasField("max_tokens"):
        max_tokens = stopping.max_tokens
        if max_tokens < 1 and not request.echo:
            raise invalid("max_tokens", "must be at least 1 (0 only with echo)")
        if max_tokens > model.max_output_tokens:
            raise invalid(
                "max_tokens",
                f"must be at most {model.max_output_tokens} for this model, got {max_tokens}",
            )
        if prompt_tokens + max_tokens > context:
            raise context_overflow(request, context, prompt_tokens, max_tokens)
    # At least one completion token must fit, as with OpenAI.
    if prompt_tokens > model.max_input_tokens or prompt_tokens >= context:
        raise context_overflow(
            request, context, prompt_tokens, longest_prompt=model.max_input_tokens
        )
    if not stopping.HasField("max_tokens"):
        max_tokens = min(model.max_output_tokens, context - prompt_tokens)
    return max_tokens


def context_overflow(
    request: pb.GenerateRequest,
    context: int,
    prompt_tokens: int,
    completion_tokens: int | None = None,
    *,
    longest_prompt: int | None = None,
) -> RequestError:
    """A context overflow in OpenAI's words, which clients recognise by them: LiteLLM's
    ContextWindowExceededError and `context_window_fallbacks` match "maximum context length".

    With a completion length: "...you requested M tokens (P in the messages, C in the
    completion)...". Without (or when the prompt alone is over the engine's longest prompt):
    "...your messages resulted in P tokens...". A completions prompt is "the prompt".
    """
    param = _input_param(request)
    if completion_tokens is not None:
        message = (
            f"{_overflow_head(param, context)}. However, you requested "
            f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the {param}, "
            f"{completion_tokens} in the completion). "
            f"Please reduce the length of the {param} or completion."
        )
    else:
        message = (
            f"{_overflow_head(param, context, longest_prompt)}. However, your {param} resulted "
            f"in {prompt_tokens} tokens. Please reduce the length of the {param}."
        )
    return invalid(param, message, code="context_length_exceeded")


def _input_param(request: pb.GenerateRequest | pb.TokenizeRequest) -> str:
    """The parameter a client sent its input as: chat's messages, or a completions prompt."""
    return "messages" if request.WhichOneof("input") == "messages" else "prompt"


def _overflow_head(param: str, context: int, longest_prompt: int | None = None) -> str:
    head = f"This model's maximum context length is {context} tokens"
    # An engine may take shorter prompts than its context (TensorRT-LLM without chunked
    # context): say so, or the numbers would not explain the refusal.
    if longest_prompt is not None and longest_prompt < context - 1:
        head += f", of which the {param} may use at most {longest_prompt}"
    return head


def _validate_stops(stops: list[str]) -> tuple[str, ...]:
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    for stop in stops:
        if not stop:
            raise invalid("stop", "stop strings must not be empty")
        if len(stop) > MAX_STOP_LENGTH:
            raise invalid("stop", f"stop strings must be at most {MAX_STOP_LENGTH} characters")
    return tuple(dict.fromkeys(stops))


def _check_range(param: str, value: float, low: float, high: float) -> None:
    if math.isnan(value) or not low <= value <= high:
        raise invalid(param, f"must be between {low:g} and {high:g}, got {value:g}")


__all__ = [
    "RequestError",
    "RequestPlan",
    "build_plan",
    "constraint_spec",
    "prompt_token_ids",
    "resolve_model",
]
