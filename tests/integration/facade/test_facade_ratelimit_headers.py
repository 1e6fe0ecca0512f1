"""x-ratelimit-* headers as the openai SDK's raw responses show them, with either limiter, on
chat and text completions alike.

A key with a request and a token budget gets OpenAI's six headers on every response: the
completion, the stream and the 429 that refuses it. A key without rate budgets gets none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from facade.keys import create_key
from facade.limits import KeyLimits
from facade.settings import FacadeSettings
from tests.integration.facade.conftest import SYNTHETIC
from tests.support.servers import FacadeServerThread, InferenceServerThread

RPM, TPM = 2, 1000
# The admission estimate: ~4 characters a token of the prompt, plus max_tokens.
PROMPT, MAX_TOKENS = "Say hi", 8
ESTIMATE = 2 + MAX_TOKENS
# Go durations as OpenAI writes them: "6m0s", "1.5s", "200ms".
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


@pytest.fixture(params=["memory", "redis"])
def facade(
    request: pytest.FixtureRequest, synthetic_inference: InferenceServerThread, tmp_path: Path
) -> Iterator[tuple[FacadeServerThread, dict[str, str]]]:
    keys_file = tmp_path / "keys.json"
    limited, _ = create_key(
        keys_file, "limited", limits=KeyLimits(requests_per_minute=RPM, tokens_per_minute=TPM)
    )
    unlimited, _ = create_key(keys_file, "unlimited")
    redis: dict[str, Any] = {}
    if request.param == "redis":
        redis["redis_url"] = request.getfixturevalue("redis_url")
    settings = FacadeSettings(
        backends=[synthetic_inference.address], keys_file=keys_file, api_keys=[], **redis
    )
    server = FacadeServerThread(settings).start()
    yield server, {"limited": limited, "unlimited": unlimited}
    server.stop()


@pytest.fixture(params=["chat", "completions"])
def create(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Creates a completion on one route, as a raw response (its headers)."""
    if request.param == "chat":

        def chat(client: openai.OpenAI, **extra: Any) -> Any:
            messages: list[Any] = [{"role": "user", "content": PROMPT}]
            return client.chat.completions.with_raw_response.create(
                model=SYNTHETIC, messages=messages, max_tokens=MAX_TOKENS, **extra
            )

        return chat

    def text(client: openai.OpenAI, **extra: Any) -> Any:
        return client.completions.with_raw_response.create(
            model=SYNTHETIC, prompt=PROMPT, max_tokens=MAX_TOKENS, **extra
        )

    return text


def _client(server: FacadeServerThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_every_response_of_a_limited_key_reports_its_budgets(
    facade: tuple[FacadeServerThread, dict[str, str]], create: Callable[..., Any]
) -> None:
    server, keys = facade
    client = _client(server, keys["limited"])

    first = create(client)
    first.parse()
    headers = first.headers
    assert headers["x-ratelimit-limit-requests"] == str(RPM)
    assert headers["x-ratelimit-remaining-requests"] == str(RPM - 1)
    assert headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert headers["x-ratelimit-remaining-tokens"] == str(TPM - ESTIMATE)
    # One request back takes 60/RPM s; the token bucket is full again sooner.
    assert headers["x-ratelimit-reset-requests"] == "30s"
    assert GO_DURATION.match(headers["x-ratelimit-reset-tokens"])

    stream = create(client, stream=True)
    assert [chunk.choices for chunk in stream.parse()]
    assert stream.headers["x-ratelimit-remaining-requests"] == "0"
    assert stream.headers["x-ratelimit-limit-tokens"] == str(TPM)
    # Time has passed since the first request: a little less than a whole minute to refill.
    assert GO_DURATION.match(stream.headers["x-ratelimit-reset-requests"])
    assert stream.headers["x-ratelimit-reset-requests"] != "1m0s"

    with pytest.raises(openai.RateLimitError) as refused:
        create(client)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == str(RPM)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert GO_DURATION.match(headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-remaining-tokens" in headers
    assert "retry-after" in headers


def test_a_key_without_rate_budgets_gets_no_ratelimit_headers(
    facade: tuple[FacadeServerThread, dict[str, str]], create: Callable[..., Any]
) -> None:
    server, keys = facade
    response = create(_client(server, keys["unlimited"]))
    response.parse()
    assert not [name for name in response.headers if name.startswith("x-ratelimit-")]
