"""One chat completion over httpx streaming, timed per SSE event (no OpenAI SDK in the hot path).

Every event passes through h11, httpcore and anyio, which makes it several times costlier in
client CPU than raw_http.py: use it for what the raw client does not do (proxies, HTTP/2,
compressed bodies), not for the highest event rates.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from tensorchat.bench.chat_stream import StreamRecorder, read_completion, request_body
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec


class HttpSender:
    """Sends `RequestSpec`s to an OpenAI-compatible `/chat/completions` over one httpx pool."""

    def __init__(self, target: Target, concurrency: int | None) -> None:
        self._target = target
        self._url = target.chat_url
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(
            headers=headers,
            limits=limits,
            timeout=httpx.Timeout(target.timeout_s, connect=min(30.0, target.timeout_s)),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, spec: RequestSpec) -> RequestResult:
        content = request_body(self._target, spec)
        result = RequestResult(start=time.monotonic())
        try:
            # httpx's read timeout is per read; the request's budget is for the whole of it.
            async with asyncio.timeout(self._target.timeout_s):
                if self._target.stream:
                    await self._stream(content, result)
                else:
                    await self._unary(content, result)
        except TimeoutError:
            result.ok, result.error = False, "ReadTimeout"
        except httpx.HTTPError as exc:
            result.ok, result.error = False, type(exc).__name__
        except ValueError as exc:  # a body that is not the JSON it should be
            result.ok, result.error = False, f"bad_response:{type(exc).__name__}"
        result.end = time.monotonic()
        return result

    async def _stream(self, content: bytes, result: RequestResult) -> None:
        async with self._client.stream("POST", self._url, content=content) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"http_{response.status_code}"
                return
            # aiter_raw skips httpx's decoder chain; SSE is never compressed in practice,
            # but honour a server that does compress.
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            chunks = response.aiter_bytes() if encoded else response.aiter_raw()
            recorder = StreamRecorder(result)
            async for chunk in chunks:
                recorder.feed(chunk, time.monotonic())
        recorder.finish()

    async def _unary(self, content: bytes, result: RequestResult) -> None:
        response = await self._client.post(self._url, content=content)
        if response.status_code != 200:
            result.error = f"http_{response.status_code}"
            return
        read_completion(response.json(), result)
