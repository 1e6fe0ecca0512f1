"""Two `tensorchat facade` processes sharing one Redis in front of one inference service
(synthetic engine): a key's budget holds across both, and a Redis outage follows the
documented failure mode without a single 500."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from facade.keys import create_key
from facade.limits import KeyLimits
from facade.settings import FacadeSettings
from tests.integration.facade.conftest import SYNTHETIC
from tests.support.facade_process import FacadeProcess, facade_process
from tests.support.redis_server import RedisServer
from tests.support.servers import FacadeServerThread, InferenceServerThread

MODEL = SYNTHETIC
UNREACHABLE = "is unreachable"


def unreachable_logged(facade: FacadeProcess) -> int:
    return facade.log.read_text(errors="replace").count(UNREACHABLE)


def redis_facade(
    directory: Path, backend: str, keys_file: Path, redis_url: str, key: str
) -> contextlib.AbstractContextManager[FacadeProcess]:
    """`tensorchat facade` with shared limits, ready to serve the synthetic model."""
    env = {**os.environ, "TENSORCHAT_API_KEYS": "", "TENSORCHAT_REDIS_URL": redis_url}
    args = ["--backends", backend, "--keys-file", str(keys_file)]
    command = [sys.executable, "-m", "tensorchat"]
    return facade_process(command, args, directory, env, lambda url: _serves_model(url, key))


def _serves_model(url: str, key: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"})
        return response.status_code == 200 and MODEL in response.text
    return False


async def _statuses(urls: list[str], key: str) -> Counter[int]:
    """One tiny chat completion per URL, all at once; the status of each."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post(f"{url}/v1/chat/completions", json=body, headers=headers) for url in urls)
        )
    return Counter(response.status_code for response in responses)


def _store_errors(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("tensorchat_facade_limit_store")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if "_total" in line)


@pytest.mark.slow
async def test_two_facades_share_a_key_budget_and_survive_a_redis_outage(
    synthetic_inference: InferenceServerThread, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path).start()
    keys_file = tmp_path / "keys.json"
    key, _ = create_key(keys_file, "ten-a-minute", limits=KeyLimits(requests_per_minute=10))
    backend = synthetic_inference.address
    try:
        with (
            redis_facade(tmp_path, backend, keys_file, redis.url, key) as first,
            redis_facade(tmp_path, backend, keys_file, redis.url, key) as second,
        ):
            urls = [first.url, second.url] * 10
            # One burst: the next request refills only 6 s after the first.
            assert await _statuses(urls, key) == Counter({200: 10, 429: 10})

            redis.kill()
            # Fail-open (the default): admitted beyond the exhausted budget, never a 500.
            statuses = Counter[int]()
            for _ in range(3):
                statuses += await _statuses([first.url, second.url], key)
            assert statuses == Counter({200: 6})
            for facade in (first, second):
                assert unreachable_logged(facade) == 1  # once per outage, not per request
                assert _store_errors(facade.url) >= 3
    finally:
        redis.stop()


@pytest.mark.slow
async def test_fail_closed_answers_503_with_the_openai_envelope(
    synthetic_inference: InferenceServerThread, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path).start()
    redis.kill()  # its port, with nothing behind it
    keys_file = tmp_path / "keys.json"
    key, _ = create_key(keys_file, "limited", limits=KeyLimits(requests_per_minute=10))
    settings = FacadeSettings(
        backends=[synthetic_inference.address],
        keys_file=keys_file,
        api_keys=[],
        redis_url=redis.url,  # type: ignore[arg-type]
        redis_failure_mode="closed",
    )
    facade = FacadeServerThread(settings).start()
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        async with httpx.AsyncClient(timeout=60) as client:
            deadline = time.monotonic() + 30
            while not _serves_model(facade.url, key):
                assert time.monotonic() < deadline, "the facade never saw the model"
                await asyncio.sleep(0.2)
            response = await client.post(
                f"{facade.url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
            )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["type"] == "server_error" and "retry" in error["message"]
        assert _store_errors(facade.url) == 1
    finally:
        facade.stop()
