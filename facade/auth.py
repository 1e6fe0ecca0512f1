"""Bearer-key authentication: constant-time checks against stored sha256 hashes.

A presented key is hashed once and compared with `hmac.compare_digest` against every
stored hash, without stopping at a match, so neither the position of a match nor how much
of a hash matched shows in the timing. Keys are never logged: failures log the reason
only, successes are known by the key's name.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from facade.errors import APIError
from facade.keys import KeyRecord, KeysFileError, hash_key, load_keys
from facade.limits import KeyLimits

log = logging.getLogger(__name__)

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
INVALID_KEY = "Incorrect API key provided."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's name, what it may use and its budget."""

    name: str
    limits: KeyLimits
    record: KeyRecord | None = None  # None when auth is disabled

    def allows(self, model_id: str, aliases: tuple[str, ...] = ()) -> bool:
        return self.record is None or self.record.allows(model_id, aliases)

    @property
    def metric_label(self) -> str:
        """The key in /metrics labels: its short id, not its name, because /metrics needs no
        key and names often name customers (`tensorchat keys list` maps one to the other)."""
        return self.record.short_id if self.record is not None else self.name


NO_LIMITS = KeyLimits()
ANONYMOUS = Principal(name="anonymous", limits=NO_LIMITS)


# What identifies one version of the keys file: a rewrite changes the inode (an atomic
# replace) or the mtime and usually the size (an in-place write, even within one mtime tick).
FileVersion = tuple[int, int, int]


def _file_version(path: Path | None) -> FileVersion | None:
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


_NOTHING_FAILED = object()


class KeyRing:
    """The keys the facade accepts: the keys file (re-read when it changes) plus dev keys."""

    def __init__(
        self,
        keys_file: Path | None,
        dev_keys: Iterable[str] = (),
        default_limits: KeyLimits = NO_LIMITS,
        *,
        disabled: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys_file = keys_file
        self.default_limits = default_limits
        self.disabled = disabled
        # Dev keys are hashed at once; the plain text is not kept.
        self._dev = [
            KeyRecord(name=f"env-key-{i}", sha256=hash_key(key))
            for i, key in enumerate(dev_keys, 1)
        ]
        self._file_records: list[KeyRecord] = []
        self._clock = clock
        self._version: FileVersion | None = None
        # The version (or stat error) last refused: it is not read, nor logged, again.
        self._failed_version: object = _NOTHING_FAILED
        self._loaded = False
        self._records: list[tuple[bytes, KeyRecord]] = []
        # What the metrics export: when the file was last read successfully (wall clock,
        # None before the first success) and how many versions of it were refused.
        self.last_reload_at: float | None = None
        self.reload_failures = 0
        self.reload_if_changed()

    def __len__(self) -> int:
        return len(self._records)

    def reload_if_changed(self) -> bool:
        """Re-read the keys file if it changed; True when new keys took effect.

        Never raises for the file: whatever it holds (any JSON, a partial write by an
        editor, no read permission), the last good keys stay in force, the error is logged
        once per version of the file and counted in `reload_failures`.
        """
        try:
            version = _file_version(self.keys_file)
        except OSError as error:
            if str(error) != self._failed_version:
                self._refuse(str(error), error)
            return False
        if (self._loaded and version == self._version) or version == self._failed_version:
            return False
        try:
            records = load_keys(self.keys_file) if self.keys_file and version else []
        except Exception as error:  # the file is input: no content may stop the reloads
            self._refuse(version, error)
            return False
        self._loaded = True
        self._version = version
        self._failed_version = _NOTHING_FAILED
        self.last_reload_at = self._clock()
        self._file_records = records
        self._records = [(bytes.fromhex(r.sha256), r) for r in [*records, *self._dev]]
        log.info("loaded %d API key(s)", len(self._records))
        return True

    def _refuse(self, version: object, error: Exception) -> None:
        self.reload_failures += 1
        self._failed_version = version
        log.error(
            "cannot use the keys file %s, keeping the %d previous key(s): %s",
            self.keys_file,
            len(self._records),
            error,
            # A traceback only for what is not a plain bad file: that would be a bug here.
            exc_info=not isinstance(error, OSError | KeysFileError),
        )

    def lookup(self, key: str) -> KeyRecord | None:
        """The record whose hash matches `key`, compared in constant time."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: KeyRecord | None = None
        for stored, record in self._records:
            # No early exit: every stored hash is compared whatever matched before.
            if hmac.compare_digest(digest, stored):
                found = record
        return found

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller for an `Authorization` header value, or a 401 APIError."""
        if self.disabled:
            return ANONYMOUS
        if not authorization:
            raise APIError(401, MISSING_KEY)
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise APIError(401, MISSING_KEY)
        record = self.lookup(key)
        if record is None:
            log.info("rejected a request with an unknown API key")
            raise APIError(401, INVALID_KEY)
        return Principal(
            name=record.name, limits=record.limits or self.default_limits, record=record
        )
