"""Where and how to send: the endpoint, model and request options, picklable for workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    # HTTP client: "raw" (the asyncio-protocol client, several times cheaper per SSE event,
    # so that the client is not what limits a benchmark) or "httpx" (proxies, HTTP/2,
    # compression).
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
