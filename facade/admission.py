"""Admission of a chat request: the body, cross-field rules, the model and the key's access,
the model's limits (from ListModels), the facade-wide gate and the key's rate limits. An
admitted request holds a gate slot and a lease that facade/chat_run.py gives back at its end.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from pydantic import ValidationError

from facade.auth import Principal
from facade.backends import ModelEntry
from facade.deps import FacadeState
from facade.errors import APIError, from_validation, model_not_found, rate_limited
from facade.limits import Lease, LimitStoreUnavailable, RateLimitExceeded, estimate_tokens
from facade.ratelimit_headers import rate_limit_headers
from facade.request_context import RequestRecord
from facade.schemas import ChatCompletionRequest
from facade.settings import FacadeSettings
from facade.tool_rules import check_tool_fields, offered_functions
from facade.translate import to_generate_request
from tensorchat import tracing
from tensorchat.v1 import inference_pb2 as pb


@dataclass(frozen=True, slots=True)
class AdmittedChat:
    """A chat request that passed admission, with the slot and lease it holds."""

    principal: Principal
    req: ChatCompletionRequest
    entry: ModelEntry
    rpc: pb.GenerateRequest
    lease: Lease
    started: float  # perf_counter() when the request arrived: latency and TTFT
    record: RequestRecord  # the access log's (facade/request_context.py)
    completion_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))  # the reply's `created`


async def admit(
    body: bytes, principal: Principal, state: FacadeState, started: float, record: RequestRecord
) -> AdmittedChat:
    """The admitted request, or the APIError (4xx/5xx) that refuses it."""
    try:
        # pydantic parses the JSON itself: strict, one pass.
        req = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as error:
        raise from_validation(error) from None
    _check_fields(req, state.settings)
    entry = state.pool.resolve(req.model)
    record.model = entry.id
    if not principal.allows(entry.id, entry.aliases):
        raise model_not_found(req.model)
    _check_completion_limit(req, entry)
    lease = await _take_slot_and_lease(req, principal, state)
    time_limit_ms = int(state.settings.request_time_limit_s * 1000)
    try:
        # The generation's id: unique on the service even when clients reuse an X-Request-Id.
        rpc = to_generate_request(req, entry.id, record.generation_id, time_limit_ms=time_limit_ms)
    except Exception:
        # Nothing ran: give back the slot and the whole token charge.
        state.gate.exit()
        await lease.release(0)
        raise
    if tracing.tracer() is not None:
        tracing.inject_context(rpc.trace_context)  # the service's spans join the request's
    return AdmittedChat(principal, req, entry, rpc, lease, started, record)


def _check_fields(req: ChatCompletionRequest, settings: FacadeSettings) -> None:
    """Rules across fields, and the facade's own cap on `n` (tensorchat.limits bounds it)."""
    if req.n > settings.max_n:
        raise _invalid("n", f"Invalid 'n': at most {settings.max_n} choices per request.")
    if req.stream_options is not None and not req.stream:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        raise _invalid("stream_options", message)
    if req.top_logprobs and not req.logprobs:
        message = "'logprobs' must be set to true when 'top_logprobs' is used."
        raise _invalid("top_logprobs", message)
    check_tool_fields(req)


def _check_completion_limit(req: ChatCompletionRequest, entry: ModelEntry) -> None:
    # The number is the service's (ModelInfo.max_output_tokens); checked here as well so that
    # the refusal names the parameter the client sent and costs no lease.
    limit, most = req.completion_limit, entry.info.max_output_tokens
    if limit is not None and most and limit > most:
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise _invalid(
            param, f"Invalid '{param}': {limit} is more than this model's {most} completion tokens."
        )


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, message, param=param)


async def _take_slot_and_lease(
    req: ChatCompletionRequest, principal: Principal, state: FacadeState
) -> Lease:
    try:
        state.gate.enter()
    except RateLimitExceeded as error:
        raise rate_limited(error.message, error.retry_after_s, code="server_overloaded") from None
    prompt_chars = _prompt_chars(req)
    estimate = estimate_tokens(prompt_chars, req.completion_limit, req.n)
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
