"""Raw HTTP against the facade: SSE bytes, disconnects, the bad-input table, limits, metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from facade.schemas import ChatCompletionChunk
from facade.settings import FacadeSettings
from tensorchat.limits import MAX_CHOICES
from tensorchat.logs import LOG_FORMAT, TextFormatter
from tests.integration.conftest import (
    MISTRAL_ID,
    QWEN_ID,
    TINY_CONTEXT,
    idle_tokens,
    wait_until_idle,
)
from tests.integration.facade.conftest import TORCH_ONLY, FacadeServerThread, Keys, Replica
from tests.support.servers import InferenceServerThread
from tests.support.waiting import eventually

HELLO = [{"role": "user", "content": "Hello! Tell me a story."}]
# Requests meant to run long set no max_tokens and ignore EOS: they generate until the
# (tiny) context is full, whatever the template adds to the prompt.
ENVELOPE = {"message", "type", "param", "code"}
TOOL = {"type": "function", "function": {"name": "get_weather"}}


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MISTRAL_ID, "messages": HELLO, **fields}


@pytest.fixture()
def http(facade: FacadeServerThread, facade_keys: Keys) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=facade.url, headers=headers(facade_keys.full), timeout=60) as c:
        yield c


def events(raw: bytes) -> list[bytes]:
    """Splits an SSE body into event payloads, checking the framing exactly."""
    assert raw.endswith(b"\n\n"), raw[-50:]
    parts = raw[:-2].split(b"\n\n")
    for part in parts:
        # Data-only events: one `data: ` line each, no event/id/retry fields, no CR.
        assert part.startswith(b"data: ") and b"\n" not in part and b"\r" not in part, part
    return [part[len(b"data: ") :] for part in parts]


@TORCH_ONLY
def test_sse_framing_byte_by_byte(http: httpx.Client) -> None:
    body = chat(
        max_tokens=5, n=2, stream=True, stream_options={"include_usage": True}, ignore_eos=True
    )
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        raw = b"".join(response.iter_raw())
    payloads = events(raw)
    assert payloads[-1] == b"[DONE]"
    assert raw.endswith(b"data: [DONE]\n\n") and raw.count(b"[DONE]") == 1
    chunks = [json.loads(p) for p in payloads[:-1]]
    for data in chunks:
        ChatCompletionChunk.model_validate(data)
        assert data["id"] == chunks[0]["id"] and data["id"].startswith("chatcmpl-")
        assert "usage" in data  # null until the last chunk when include_usage is on
    *streamed, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 10
    assert all(c["usage"] is None for c in streamed)
    for index in (0, 1):
        mine = [c["choices"][0] for c in streamed if c["choices"][0]["index"] == index]
        # A choice opens with a role chunk. Choices first appear in index order (the openai SDK's
        # stream helper needs it), so when choice 1's first text arrives before choice 0's (its
        # first token may be half a UTF-8 character), choice 0 opens with a bare role chunk and
        # its content follows in its own chunks: test_facade_tool_translate pins both forms.
        assert mine[0]["delta"] in ({"role": "assistant", "content": ""}, {"role": "assistant"})
        assert mine[-1]["delta"] == {} and mine[-1]["finish_reason"] == "length"
        assert all(c["finish_reason"] is None for c in mine[:-1])
        assert all(set(c["delta"]) == {"content"} for c in mine[1:-1])


@TORCH_ONLY
def test_non_streaming_body_is_plain_json(http: httpx.Client) -> None:
    response = http.post("/chat/completions", json=chat(max_tokens=2))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    # The completion's id is OpenAI's chatcmpl-; the request's (x-request-id) is req_.
    assert data["id"].startswith("chatcmpl-") and response.headers["x-request-id"] != data["id"]
    assert set(data) == {
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "choices",
        "usage",
    }


def test_disconnect_mid_stream_frees_the_engine_and_the_key_slot(
    facade: FacadeServerThread, facade_keys: Keys, inference_server: InferenceServerThread
) -> None:
    body = chat(model=QWEN_ID, stream=True, ignore_eos=True, max_tokens=200)
    tokens_before = idle_tokens(inference_server)
    with httpx.Client(base_url=facade.url, headers=headers(facade_keys.single), timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = (line for line in response.iter_lines() if line)
            for _ in range(3):
                assert next(lines).startswith("data: ")
            assert inference_server.active_requests() == 1
        # Leaving the block closed the connection mid-stream: the engine dropped the request
        # before its 200 tokens.
        assert idle_tokens(inference_server) - tokens_before < 200
        # The key allows one request at a time: the slot is already back.
        again = c.post("/v1/chat/completions", json=chat(max_tokens=1))
        assert again.status_code == 200, again.text


def test_disconnect_while_waiting_for_a_completion_cancels_it(
    facade: FacadeServerThread, facade_keys: Keys, inference_server: InferenceServerThread
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{facade.url}/v1/chat/completions",
            headers=headers(facade_keys.full),
            json=chat(ignore_eos=True),
            timeout=httpx.Timeout(10, read=0.3),
        )
    wait_until_idle(inference_server)
    metrics = httpx.get(f"{facade.url}/metrics").text
    assert 'tensorchat_facade_requests_total{route="/v1/chat/completions",status="499"}' in metrics


def long_body(size: int) -> bytes:
    return json.dumps(chat(messages=[{"role": "user", "content": "x" * size}])).encode()


# (case, raw body or JSON fields, status, param, code)
TABLE: list[tuple[str, bytes | dict[str, Any], int, str | None, str | None]] = [
    ("malformed json", b'{"model": ', 400, None, None),
    ("empty body", b"", 400, None, None),
    ("array body", b"[]", 400, None, None),
    ("missing messages", {"model": MISTRAL_ID}, 400, "messages", None),
    ("empty messages", chat(messages=[]), 400, "messages", None),
    ("bad role", chat(messages=[{"role": "robot", "content": "x"}]), 400, "messages[0].role", None),
    ("temperature type", chat(temperature="hot"), 400, "temperature", None),
    ("temperature range", chat(temperature=3), 400, "temperature", None),
    ("top_p range", chat(top_p=1.2), 400, "top_p", None),
    ("n range", chat(n=0), 400, "n", None),
    ("n over max", chat(n=17), 400, "n", None),
    ("stop count", chat(stop=["1", "2", "3", "4", "5"]), 400, "stop", None),
    ("penalty range", chat(frequency_penalty=-3), 400, "frequency_penalty", None),
    ("top_logprobs without logprobs", chat(top_logprobs=2), 400, "top_logprobs", None),
    ("logit_bias key", chat(logit_bias={"x": 1}), 400, "logit_bias", None),
    (
        "logit_bias outside vocab",
        chat(logit_bias={"4000000": 1}, max_tokens=1),
        400,
        "logit_bias",
        None,
    ),
    ("tool without function", chat(tools=[{"type": "function"}]), 400, "tools[0].function", None),
    (
        "tool_choice naming no tool",
        chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
        400,
        "tool_choice",
        None,
    ),
    (
        "tool message without a call",
        chat(messages=[*HELLO, {"role": "tool", "tool_call_id": "call_1", "content": "4"}]),
        400,
        "messages[1].tool_call_id",
        None,
    ),
    (
        "non-JSON arguments in history",
        chat(
            messages=[
                *HELLO,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                },
            ]
        ),
        400,
        "messages[1].tool_calls[0].function.arguments",
        None,
    ),
    ("129 tools", chat(tools=[TOOL] * 129), 400, "tools", None),
    (
        "stream_options without stream",
        chat(stream_options={"include_usage": True}),
        400,
        "stream_options",
        None,
    ),
    ("max_tokens over the model's", chat(max_tokens=TINY_CONTEXT * 4), 400, "max_tokens", None),
    ("unknown model", chat(model="llama-70b"), 404, "model", "model_not_found"),
    (
        "context overflow",
        chat(messages=[{"role": "user", "content": "hi " * TINY_CONTEXT}]),
        400,
        "messages",
        "context_length_exceeded",
    ),
    ("body too large", long_body(5 * 1024 * 1024), 413, None, "request_too_large"),
]


def test_n_past_every_limit_is_refused_with_the_services_limit(http: httpx.Client) -> None:
    # The facade's schema once allowed 128 and the service 16: the number is now one.
    response = http.post("/v1/chat/completions", json=chat(n=MAX_CHOICES * 10))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "n"
    assert error["message"] == f"Invalid 'n': at most {MAX_CHOICES} choices per request."


@pytest.mark.parametrize(
    ("case", "payload", "status", "param", "code"), TABLE, ids=[row[0] for row in TABLE]
)
@TORCH_ONLY
def test_bad_input_table(
    http: httpx.Client,
    case: str,
    payload: bytes | dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = http.post(
        "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ENVELOPE
    assert error["param"] == param and error["code"] == code and error["message"]
    assert error["type"] == "invalid_request_error"


@TORCH_ONLY
def test_chunked_body_too_large_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(5 * 1024):
            yield b"y" * 1024
        yield b'"}]}'

    response = http.post("/v1/chat/completions", content=chunks())
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


@TORCH_ONLY
def test_unknown_fields_are_ignored_and_top_p_one_is_fine(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json=chat(
            max_tokens=1,
            top_p=1.0,
            top_k=-1,
            store=False,
            metadata={"x": "y"},
            parallel_tool_calls=False,
            user="end-user-7",
            seed=-3,
        ),
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "You didn't provide an API key"),
        ("Bearer nope", "Incorrect API key"),
        ("Token abc", "You didn't provide an API key"),
    ],
)
@TORCH_ONLY
def test_missing_or_wrong_key_is_401(
    facade: FacadeServerThread, auth: str | None, message: str
) -> None:
    response = httpx.post(
        f"{facade.url}/v1/chat/completions",
        json=chat(),
        headers={"Authorization": auth} if auth else {},
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert error["message"].startswith(message)


@TORCH_ONLY
def test_token_budget_is_charged_real_usage_and_refunded_on_refusal(
    facade: FacadeServerThread, facade_keys: Keys
) -> None:
    with httpx.Client(base_url=facade.url, headers=headers(facade_keys.tokens), timeout=30) as c:
        # ~640 estimated tokens: the whole 400-token budget is taken at admission, and given
        # back when the service refuses the prompt.
        overflow = chat(messages=[{"role": "user", "content": "word " * (TINY_CONTEXT * 2)}])
        assert c.post("/v1/chat/completions", json=overflow).status_code == 400
        # Each is estimated at 104 tokens and really uses a few dozen: the difference comes
        # back, or the fourth could not start (refilling 120 tokens takes 18 s).
        for _ in range(5):
            ok = c.post("/v1/chat/completions", json=chat(max_tokens=100, stop=["e"]))
            assert ok.status_code == 200, ok.text
        # A request estimated above what is left (4 x 100, the whole budget) waits, and is
        # told how long.
        big = c.post("/v1/chat/completions", json=chat(max_tokens=100, n=4))
        assert big.status_code == 429
        assert 1 <= int(big.headers["retry-after"]) <= 60
        assert big.json()["error"]["code"] == "rate_limit_exceeded"


@TORCH_ONLY
def test_unknown_routes_and_methods_get_the_envelope(http: httpx.Client) -> None:
    for response, status in (
        (http.get("/v1/chat/completions"), 405),
        (http.post("/v2/everything", json={}), 404),
    ):
        assert response.status_code == status
        assert set(response.json()["error"]) == ENVELOPE


@TORCH_ONLY
def test_health_and_metrics_need_no_key(facade: FacadeServerThread, http: httpx.Client) -> None:
    http.post("/v1/chat/completions", json=chat(max_tokens=2, stream=True))
    health = httpx.get(f"{facade.url}/health")
    assert health.status_code == 200
    assert set(health.json()["models"]) == {MISTRAL_ID, QWEN_ID}
    assert httpx.get(f"{facade.url}/health/live").status_code == 200
    metrics = httpx.get(f"{facade.url}/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert f'tensorchat_facade_time_to_first_token_seconds_count{{model="{MISTRAL_ID}"}}' in text
    assert 'tensorchat_facade_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert f'tensorchat_facade_completion_tokens_total{{model="{MISTRAL_ID}"}}' in text
    assert "tensorchat_facade_backend_up" in text


def test_error_after_streaming_began_is_an_event_then_done(
    inference_server: InferenceServerThread, facade_keys: Keys
) -> None:
    replica = Replica(inference_server).start()
    settings = FacadeSettings(
        backends=[replica.address], keys_file=facade_keys.path, refresh_interval_s=60
    )
    server = FacadeServerThread(settings).start()
    try:
        body = chat(stream=True, ignore_eos=True)
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json=body,
            headers=headers(facade_keys.full),
            timeout=30,
        ) as response:
            assert response.status_code == 200
            stream = response.iter_bytes()
            received = next(stream)
            # The backend goes away mid-stream.
            threading.Thread(target=replica.stop).start()
            received += b"".join(stream)
        payloads = events(received)
        assert payloads[-1] == b"[DONE]"
        error = json.loads(payloads[-2])["error"]
        assert set(error) == ENVELOPE and error["type"] == "server_error"
        assert all("error" not in json.loads(p) for p in payloads[:-2])
        wait_until_idle(inference_server)
    finally:
        server.stop()
        replica.stop()


def test_no_backend_is_503(facade_keys: Keys) -> None:
    settings = FacadeSettings(
        backends=["127.0.0.1:1"], keys_file=facade_keys.path, probe_timeout_s=0.5
    )
    server = FacadeServerThread(settings).start()
    try:
        assert httpx.get(f"{server.url}/health").status_code == 503
        response = httpx.post(
            f"{server.url}/v1/chat/completions", json=chat(), headers=headers(facade_keys.full)
        )
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["type"] == "server_error"
        # Alive while not ready: liveness does not depend on any backend.
        assert httpx.get(f"{server.url}/health/live").status_code == 200
    finally:
        server.stop()


def test_a_client_leaving_during_its_upload_is_counted_499_and_logged_at_info(
    facade: FacadeServerThread, facade_keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    registry = facade.app.state.facade.metrics.registry
    labels = {"route": "/v1/chat/completions", "status": "499"}

    def left() -> float:
        return registry.get_sample_value("tensorchat_facade_requests_total", labels) or 0.0

    before = left()
    caplog.set_level("INFO")
    with socket.create_connection(("127.0.0.1", facade.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {facade_keys.full}\r\n".encode()
            + b'Content-Length: 100000\r\n\r\n{"model": "'
        )
        sock.shutdown(socket.SHUT_RDWR)  # gone half-way through the body
    deadline = time.monotonic() + 10
    while left() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left() == before + 1
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("ended before its body was complete" in r.getMessage() for r in caplog.records)


def test_client_text_in_the_request_log_cannot_forge_a_line(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    user = 'u1 status=200\n2026-01-01 00:00:00 INFO tensorchat.facade.access: http forged "'
    with caplog.at_level("INFO", logger="tensorchat.facade.access"):
        reply = http.post("/v1/chat/completions", json=chat(max_tokens=1, user=user))
        assert reply.status_code == 200
        # The line is written just after the response's last byte, which we may read first.
        eventually(lambda: any(getattr(r, "fields", None) for r in caplog.records), "the line")
    # The access line as the text log format writes it (tensorchat.logs).
    formatter = TextFormatter(LOG_FORMAT)
    (line,) = [formatter.format(r) for r in caplog.records if getattr(r, "fields", None)]
    assert "\n" not in line
    assert f"user={json.dumps(user)} " in line
