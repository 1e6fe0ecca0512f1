"""Re-reads the keys file in the background: revoking or adding a key needs no restart.

Revocation is a security property, so the task that carries it must not stop quietly: each
round catches everything (the key ring already keeps the last good keys for a bad file;
anything else is a bug, logged with its traceback) and the task reports it if it ever ends
other than by being cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Reloadable(Protocol):
    def reload_if_changed(self) -> bool: ...


async def reload_keys_forever(keyring: Reloadable, interval_s: float) -> None:
    """Checks the keys file every `interval_s` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            keyring.reload_if_changed()
        except Exception:  # CancelledError is not an Exception: shutdown still ends the loop
            log.exception("reloading the keys file failed; trying again in %g s", interval_s)


def start_key_reloads(keyring: Reloadable, interval_s: float) -> asyncio.Task[None]:
    """The reload task on the running loop; cancel it at shutdown."""
    task = asyncio.create_task(reload_keys_forever(keyring, interval_s), name="keys-reload")
    task.add_done_callback(_report_unexpected_end)
    return task


def _report_unexpected_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    log.critical(
        "the keys reload task stopped: changes to the keys file (revocations too) no longer "
        "take effect until the facade restarts",
        exc_info=task.exception(),
    )
