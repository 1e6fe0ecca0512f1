"""Stored responses with a real redis-server: `store`, `previous_response_id` and GET
/v1/responses/{id} through the openai SDK, kept with the configured TTL, per key, and what a
Redis outage does (a default store goes on unstored, an explicit one is a 503)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from facade.settings import FacadeSettings
from tests.integration.conftest import MISTRAL_ID
from tests.integration.facade.conftest import TORCH_ONLY, Keys
from tests.support.redis_server import RedisServer
from tests.support.servers import FacadeServerThread, InferenceServerThread

pytestmark = TORCH_ONLY

GREEDY: dict[str, Any] = {"model": MISTRAL_ID, "temperature": 0, "max_output_tokens": 4}
TTL_S = 600.0


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture()
def stateful(
    inference_server: InferenceServerThread, facade_keys: Keys, redis_server: RedisServer
) -> Iterator[FacadeServerThread]:
    settings = FacadeSettings(
        backends=[inference_server.address],
        keys_file=facade_keys.path,
        api_keys=[],
        redis_url=redis_server.url,
        responses_ttl_s=TTL_S,
    )
    server = FacadeServerThread(settings).start()
    yield server
    server.stop()


def sdk(facade: FacadeServerThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{facade.url}/v1", api_key=key, max_retries=0)


def test_previous_response_id_continues_the_stored_conversation(
    stateful: FacadeServerThread, facade_keys: Keys, redis_server: RedisServer
) -> None:
    client = sdk(stateful, facade_keys.full)
    first = client.responses.create(input="Hi", instructions="Be kind.", **GREEDY)
    assert client.responses.retrieve(first.id).model_dump() == first.model_dump()
    # Kept with the configured TTL (Redis' own countdown, not the test's clock).
    ttl_ms = redis.Redis.from_url(redis_server.url).pttl(f"tc:resp:{first.id}")
    assert 0 < ttl_ms <= TTL_S * 1000
    second = client.responses.create(input="And?", previous_response_id=first.id, **GREEDY)
    assert second.previous_response_id == first.id
    # The same as sending the whole conversation: instructions are not carried over.
    stateless = client.responses.create(
        input=[
            {"role": "user", "content": "Hi"},
            *[item.model_dump() for item in first.output],
            {"role": "user", "content": "And?"},
        ],
        store=False,
        **GREEDY,
    )
    assert second.output_text == stateless.output_text
    assert second.usage == stateless.usage
    # A chain goes on: the third turn sees both earlier ones.
    third = client.responses.create(input="Go on", previous_response_id=second.id, **GREEDY)
    assert third.usage is not None and second.usage is not None
    assert third.usage.input_tokens > second.usage.total_tokens


def test_stored_responses_belong_to_their_key_and_store_false_keeps_none(
    stateful: FacadeServerThread, facade_keys: Keys
) -> None:
    client = sdk(stateful, facade_keys.full)
    kept = client.responses.create(input="Hi", **GREEDY)
    other = sdk(stateful, facade_keys.single)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(kept.id)
    with pytest.raises(openai.BadRequestError) as info:
        other.responses.create(input="x", previous_response_id=kept.id, **GREEDY)
    assert info.value.code == "previous_response_not_found"
    assert info.value.param == "previous_response_id"
    unkept = client.responses.create(input="Hi", store=False, **GREEDY)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)


def test_a_streamed_response_is_stored_before_its_last_event(
    stateful: FacadeServerThread, facade_keys: Keys
) -> None:
    client = sdk(stateful, facade_keys.full)
    events = list(client.responses.create(input="Hi", stream=True, store=True, **GREEDY))
    last = events[-1].response  # type: ignore[union-attr]
    assert client.responses.retrieve(last.id).output_text == last.output_text


def test_redis_down_a_default_store_goes_on_and_an_explicit_one_is_503(
    stateful: FacadeServerThread, facade_keys: Keys, redis_server: RedisServer
) -> None:
    client = sdk(stateful, facade_keys.full)
    redis_server.kill()
    assert client.responses.create(input="Hi", **GREEDY).output_text
    with pytest.raises(openai.InternalServerError) as info:
        client.responses.create(input="Hi", store=True, **GREEDY)
    assert info.value.status_code == 503 and "could not be stored" in info.value.message
    with pytest.raises(openai.InternalServerError):
        client.responses.create(input="Hi", previous_response_id="resp_x", **GREEDY)
