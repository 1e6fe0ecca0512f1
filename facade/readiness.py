"""Tell a supervisor that the facade is ready, by systemd's notify protocol (sd_notify(3)).

When NOTIFY_SOCKET names a Unix datagram socket (systemd sets it for `Type=notify` units;
`tensorchat serve` sets it for its facade), the facade sends `READY=1` there once, the first
time a backend serves a model, i.e. when GET /health would first answer 200. The supervisor
learns it without polling /health, so no access-log lines or request metrics come from it.
Without the variable nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

from facade.backends import BackendPool

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


class ReadyNotifier:
    """A BackendPool `on_change` hook that sends READY=1 the first time the pool is ready."""

    def __init__(self, address: str) -> None:
        # A leading "@" names a socket in the abstract namespace (sd_notify(3)).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sent = False

    @classmethod
    def from_environment(cls) -> ReadyNotifier | None:
        address = os.environ.get(NOTIFY_SOCKET_ENV)
        return cls(address) if address else None

    def __call__(self, pool: BackendPool) -> None:
        if self.sent or not pool.ready:
            return
        self.sent = True
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"READY=1", self.address)
        except OSError as error:  # the supervisor went away: serving matters more
            log.warning("could not notify %s of readiness: %s", self.address, error)
