"""How the facade connects to Redis (TENSORCHAT_REDIS_URL): one setup for the shared per-key
limits (facade/limits_redis.py) and the stored responses (facade/response_store.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# What a failed Redis call raises: redis-py's errors, and the socket's and asyncio's timeouts.
STORE_ERRORS = (RedisError, OSError, TimeoutError)


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A client that gives up after `timeout_s` (connecting or waiting for an answer)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # No retries inside redis-py: a failed call is a decision (go on without Redis or
        # refuse) now, and the callers retry later.
        retry=Retry(NoBackoff(), 0),
    )


def where(url: str) -> str:
    """Host and port, for logs and messages: the URL may carry a password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"
