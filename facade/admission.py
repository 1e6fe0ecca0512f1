"""Admission of a chat, text completions or Responses API request: the body, cross-field rules,
the model and the key's access, the model's limits (from ListModels), the facade-wide gate and
the key's rate limits. An admitted request holds a gate slot and a lease that
facade/generation_run.py gives back at its end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError

from facade.auth import Principal
from facade.backends import ModelEntry
from facade.completions import CompletionShape
from facade.deps import FacadeState
from facade.errors import APIError, from_validation, model_not_found, rate_limited
from facade.ids import random_hex
from facade.limits import Lease, LimitStoreUnavailable, RateLimitExceeded, estimate_tokens
from facade.ratelimit_headers import rate_limit_headers
from facade.request_context import RequestRecord
from facade.responses_input import check_unsupported, load_history, to_chat_request
from facade.responses_output import ResponsesShape
from facade.responses_schemas import ResponsesRequest
from facade.schemas import ChatCompletionRequest, CompletionRequest, GenerationFields
from facade.settings import FacadeSettings
from facade.shapes import ChatShape, ResponseShape
from facade.tool_rules import check_tool_fields, offered_functions
from facade.translate import to_generate_request, to_prompt_requests
from tensorchat import tracing
from tensorchat.v1 import inference_pb2 as pb

RequestT = TypeVar("RequestT", ChatCompletionRequest, CompletionRequest, ResponsesRequest)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed admission, with the slot and lease it holds: its generations
    (one per prompt; chat has one) and the shape its reply takes."""

    principal: Principal
    req: GenerationFields
    entry: ModelEntry
    rpcs: list[pb.GenerateRequest]
    shape: ResponseShape
    lease: Lease
    started: float  # perf_counter() when the request arrived: latency and TTFT
    record: RequestRecord  # the access log's (facade/request_context.py)
    completion_id: str  # the reply's `id`
    created: int = field(default_factory=lambda: int(time.time()))  # the reply's `created`


async def admit(
    body: bytes, principal: Principal, state: FacadeState, started: float, record: RequestRecord
) -> Admitted:
    """The admitted chat request, or the APIError (4xx/5xx) that refuses it."""
    req = _parse(ChatCompletionRequest, body)
    _check_fields(req, state.settings)
    if req.top_logprobs and not req.logprobs:
        message = "'logprobs' must be set to true when 'top_logprobs' is used."
        raise _invalid("top_logprobs", message)
    check_tool_fields(req)
    entry = _model(req, principal, state, record)
    lease = await _take_slot_and_lease(req, principal, state, _prompt_chars(req), req.n)

    def rpcs(time_limit_ms: int) -> list[pb.GenerateRequest]:
        # The generation's id: unique on the service even when clients reuse an X-Request-Id.
        generation_id = record.generation_id
        return [to_generate_request(req, entry.id, generation_id, time_limit_ms=time_limit_ms)]

    generations = await _generations(state, lease, rpcs)
    completion_id = f"chatcmpl-{random_hex()}"
    return Admitted(
        principal, req, entry, generations, ChatShape(req), lease, started, record, completion_id
    )


async def admit_completion(
    body: bytes, principal: Principal, state: FacadeState, started: float, record: RequestRecord
) -> Admitted:
    """The admitted text completions request, or the APIError that refuses it."""
    req = _parse(CompletionRequest, body)
    _check_fields(req, state.settings)
    # Honoured only where they change nothing: no extra candidates, no fill-in-the-middle.
    if req.best_of is not None and req.best_of != req.n:
        message = "Invalid 'best_of': generating more candidates than 'n' is not supported."
        raise _invalid("best_of", message)
    if req.suffix:
        raise _invalid("suffix", "Invalid 'suffix': inserting text (a suffix) is not supported.")
    prompts = req.prompts
    choices = len(prompts) * req.n
    if choices > state.settings.max_n:
        message = f"Invalid 'n': at most {state.settings.max_n} choices over all prompts."
        raise _invalid("n", message)
    entry = _model(req, principal, state, record)
    # A token id counts as the four characters of text a token averages.
    chars = sum(len(p) if isinstance(p, str) else 4 * len(p) for p in prompts)
    lease = await _take_slot_and_lease(req, principal, state, chars, choices)

    def rpcs(time_limit_ms: int) -> list[pb.GenerateRequest]:
        return to_prompt_requests(req, entry.id, record.generation_id, time_limit_ms=time_limit_ms)

    generations = await _generations(state, lease, rpcs)
    completion_id = f"cmpl-{random_hex()}"
    return Admitted(
        principal,
        req,
        entry,
        generations,
        CompletionShape(req),
        lease,
        started,
        record,
        completion_id,
    )


async def admit_response(
    body: bytes, principal: Principal, state: FacadeState, started: float, record: RequestRecord
) -> Admitted:
    """The admitted Responses API request, or the APIError that refuses it: refused like the
    chat request it means (facade/responses_input.py), which makes its generation."""
    req = _parse(ResponsesRequest, body)
    storing = check_unsupported(req, state.responses)
    history = await load_history(req, state.responses, principal.name)
    chat = to_chat_request(req, history)
    _check_fields(chat, state.settings)
    check_tool_fields(chat)
    entry = _model(chat, principal, state, record)
    lease = await _take_slot_and_lease(chat, principal, state, _prompt_chars(chat), 1)

    def rpcs(time_limit_ms: int) -> list[pb.GenerateRequest]:
        generation_id = record.generation_id
        return [to_generate_request(chat, entry.id, generation_id, time_limit_ms=time_limit_ms)]

    generations = await _generations(state, lease, rpcs)
    store = state.responses if storing else None
    shape = ResponsesShape(req, store=store, owner=principal.name, history=history)
    response_id = f"resp_{random_hex()}"
    return Admitted(principal, chat, entry, generations, shape, lease, started, record, response_id)


def _parse(model: type[RequestT], body: bytes) -> RequestT:
    try:
        # pydantic parses the JSON itself: strict, one pass.
        return model.model_validate_json(body)
    except ValidationError as error:
        raise from_validation(error) from None


def _model(
    req: GenerationFields, principal: Principal, state: FacadeState, record: RequestRecord
) -> ModelEntry:
    entry = state.pool.resolve(req.model)
    record.model = entry.id
    if not principal.allows(entry.id, entry.aliases):
        raise model_not_found(req.model)
    _check_completion_limit(req, entry)
    return entry


async def _generations(
    state: FacadeState, lease: Lease, build: Callable[[int], list[pb.GenerateRequest]]
) -> list[pb.GenerateRequest]:
    """The request's Generate RPCs (`build` gets the time limit in ms), traced like the
    request; should building them fail, the slot and lease go back."""
    try:
        rpcs = build(int(state.settings.request_time_limit_s * 1000))
    except Exception:
        # Nothing ran: give back the slot and the whole token charge.
        state.gate.exit()
        await lease.release(0)
        raise
    if tracing.tracer() is not None:
        for rpc in rpcs:
            tracing.inject_context(rpc.trace_context)  # the service's spans join the request's
    return rpcs


def _check_fields(req: GenerationFields, settings: FacadeSettings) -> None:
    """Rules across fields, and the facade's own cap on `n` (tensorchat.limits bounds it)."""
    if req.n > settings.max_n:
        raise _invalid("n", f"Invalid 'n': at most {settings.max_n} choices per request.")
    if req.stream_options is not None and not req.stream:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        raise _invalid("stream_options", message)


def _check_completion_limit(req: GenerationFields, entry: ModelEntry) -> None:
    # The number is the service's (ModelInfo.max_output_tokens); checked here as well so that
    # the refusal names the parameter the client sent and costs no lease.
    limit, most = req.completion_limit, entry.info.max_output_tokens
    if limit is not None and most and limit > most:
        param = req.completion_limit_param
        raise _invalid(
            param, f"Invalid '{param}': {limit} is more than this model's {most} completion tokens."
        )


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, message, param=param)


async def _take_slot_and_lease(
    req: GenerationFields, principal: Principal, state: FacadeState, prompt_chars: int, choices: int
) -> Lease:
    try:
        state.gate.enter()
    except RateLimitExceeded as error:
        raise rate_limited(error.message, error.retry_after_s, code="server_overloaded") from None
    estimate = estimate_tokens(prompt_chars, req.completion_limit, choices)
    try:
        return await state.limiter.acquire(principal.name, principal.limits, estimate)
    except RateLimitExceeded as error:
        state.gate.exit()
        state.metrics.rate_limited.labels(principal.metric_label).inc()
        refusal = rate_limited(error.message, error.retry_after_s)
        refusal.headers.update(rate_limit_headers(error.levels))
        raise refusal from None
    except LimitStoreUnavailable as error:  # Redis down, failing closed
        state.gate.exit()
        # The limiter tries Redis again about once a second (limits_redis.RETRY_INTERVAL_S).
        raise APIError(503, str(error), headers={"Retry-After": "1"}) from None


def _prompt_chars(req: ChatCompletionRequest) -> int:
    """Characters the prompt holds: messages, their calls' arguments, the offered tools."""
    chars = sum(len(m.content) for m in req.messages)
    chars += sum(len(call.arguments) for m in req.messages for call in m.calls)
    for function in offered_functions(req):
        # Rendered in the prompt: the name, the description and the parameters schema.
        chars += len(function.name) + len(function.description or "")
        chars += len(json.dumps(function.parameters)) if function.parameters else 0
    return chars
