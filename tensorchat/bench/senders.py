"""The client for a `Target`: one sender per kind of endpoint, behind one interface.

Kept apart from target.py, which every sender imports for its `Target`: choosing among the
senders here is what lets target.py import none of them.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from tensorchat.bench.grpc_client import GrpcSender
from tensorchat.bench.http_client import HttpSender
from tensorchat.bench.raw_http import RawHttpSender
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec


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
    if target.kind == "grpc":
        sender = GrpcSender(target)
    elif target.http_client == "raw":
        sender = RawHttpSender(target)
    else:
        sender = HttpSender(target, concurrency)
    return contextlib.aclosing(sender)
