"""Where and how to send: the endpoint, model and request options, picklable for workers."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from tensorchat.bench.stats import RequestResult
from tensorchat.bench.workload import RequestSpec


@dataclass(frozen=True, slots=True)
class Target:
    """An OpenAI-compatible base URL (`kind="http"`) or a Generate server (`kind="grpc"`)."""

    kind: str  # "http" or "grpc"
    address: str  # base URL (…/v1) or a full …/chat/completions URL; or HOST:PORT for gRPC
    model: str
    api_key: str | None = None
    stream: bool = True
    ignore_eos: bool = False
    temperature: float | None = None
    timeout_s: float = 600.0
    # HTTP client: "raw" (the asyncio-protocol client: ~20 µs of CPU per SSE event) or
    # "httpx" (~120-180 µs per event; proxies, HTTP/2, compression).
    http_client: str = "raw"
    # Extra JSON fields for every HTTP request body (e.g. vendor extensions).
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("http", "grpc"):
            raise ValueError(f"unknown target kind {self.kind!r}")
        if self.http_client not in ("httpx", "raw"):
            raise ValueError(f"unknown HTTP client {self.http_client!r}")

    @property
    def chat_url(self) -> str:
        url = self.address.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


class Sender(Protocol):
    async def send(self, spec: RequestSpec) -> RequestResult:
        """Send one request and measure it; never raises for a failed request."""
        ...


class ClosableSender(Sender, Protocol):
    async def aclose(self) -> None:
        """Close connections and channels."""
        ...


def open_sender(target: Target, concurrency: int | None) -> contextlib.aclosing[ClosableSender]:
    """A connected sender for `target`, sized for `concurrency` requests in flight (None: any);
    use it as `async with open_sender(...) as sender`."""
    sender: ClosableSender
    if target.kind == "http" and target.http_client == "raw":
        from tensorchat.bench.raw_http import RawHttpSender

        sender = RawHttpSender(target)
    elif target.kind == "http":
        from tensorchat.bench.http_client import HttpSender

        sender = HttpSender(target, concurrency)
    else:
        from tensorchat.bench.grpc_client import GrpcSender

        sender = GrpcSender(target)
    return contextlib.aclosing(sender)
