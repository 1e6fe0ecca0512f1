"""Stored responses (the Responses API's `store` and `previous_response_id`) in Redis.

Each stored response is one JSON string under `tc:resp:{id}` that expires `ttl_s` after it
was written (24 h by default, TENSORCHAT_RESPONSES_TTL_S): the key it belongs to (another
key cannot read or continue it), the `response` object as it was returned (GET
/v1/responses/{id}), and the `conversation` that `previous_response_id` continues: the
stored conversation it continued itself, its input items and its output items, as Responses
input items. Instructions are not part of it: OpenAI does not carry them over either.

Without TENSORCHAT_REDIS_URL there is no store and the facade is stateless
(facade/responses_input.py decides what is refused then).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as redis

log = logging.getLogger(__name__)

# Larger than the limiter's 0.5 s: a long conversation is a few megabytes to write.
STORE_TIMEOUT_S = 2.0
DEFAULT_TTL_S = 24 * 3600.0


class StoreUnavailable(Exception):
    """Redis could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    owner: str  # the API key's name
    response: dict[str, Any]
    conversation: list[dict[str, Any]]


class ResponseStore:
    """Reads and writes stored responses; every failure is a `StoreUnavailable`."""

    def __init__(self, client: redis.Redis, ttl_s: float = DEFAULT_TTL_S, where: str = "") -> None:
        self._client = client
        self.ttl_s = ttl_s
        self.where = where or "the configured URL"

    @classmethod
    def from_url(cls, url: str, ttl_s: float = DEFAULT_TTL_S) -> ResponseStore:
        # Imported only where used: redis-py adds about 0.1 s to the facade's start.
        from facade.redis_client import connect, where

        return cls(connect(url, STORE_TIMEOUT_S), ttl_s, where(url))

    async def save(self, response_id: str, stored: StoredResponse) -> None:
        value = json.dumps(
            {
                "owner": stored.owner,
                "response": stored.response,
                "conversation": stored.conversation,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        from facade.redis_client import STORE_ERRORS  # loaded with the client (from_url)

        try:
            await self._client.set(_key(response_id), value, px=int(self.ttl_s * 1000))
        except STORE_ERRORS as error:
            raise StoreUnavailable(self._unreachable(error)) from error

    async def load(self, response_id: str, owner: str) -> StoredResponse | None:
        """The stored response if it exists, has not expired and belongs to `owner`."""
        from facade.redis_client import STORE_ERRORS

        try:
            value = await self._client.get(_key(response_id))
        except STORE_ERRORS as error:
            raise StoreUnavailable(self._unreachable(error)) from error
        if value is None:
            return None
        data = json.loads(value)
        if data["owner"] != owner:
            return None  # another key's response: as if it did not exist
        return StoredResponse(data["owner"], data["response"], data["conversation"])

    def _unreachable(self, error: BaseException) -> str:
        log.warning("response store at %s failed: %r", self.where, error)
        return f"The response store (Redis at {self.where}) is unreachable."

    async def close(self) -> None:
        await self._client.aclose()


def _key(response_id: str) -> str:
    return f"tc:resp:{response_id}"
