"""Fixtures shared by every test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer
from tests.support.tiny_models import tiny_mistral_checkpoint, tiny_qwen2_checkpoint
from tests.support.tokenizer_assets import MissingAsset


@pytest.fixture(scope="session")
def tiny_mistral_dir() -> Path:
    """A tiny random MistralForCausalLM with the real Mistral v0.3 tokenizer and template."""
    try:
        return tiny_mistral_checkpoint()
    except MissingAsset as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tiny_qwen2_dir() -> Path:
    """A tiny random Qwen2ForCausalLM with the real Qwen2.5 tokenizer and template."""
    try:
        return tiny_qwen2_checkpoint()
    except MissingAsset as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the session (skipped, with how to install it, if missing)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url
