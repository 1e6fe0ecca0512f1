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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from facade.errors import APIError
from facade.keys import KeyRecord, hash_key, load_keys
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


NO_LIMITS = KeyLimits()
ANONYMOUS = Principal(name="anonymous", limits=NO_LIMITS)


class KeyRing:
    """The keys the facade accepts: the keys file (re-read when it changes) plus dev keys."""

    def __init__(
        self,
        keys_file: Path | None,
        dev_keys: Iterable[str] = (),
        default_limits: KeyLimits = NO_LIMITS,
        *,
        disabled: bool = False,
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
        self._mtime: int | None = None
        self._loaded = False
        self._records: list[tuple[bytes, KeyRecord]] = []
        self.reload_if_changed()

    def __len__(self) -> int:
        return len(self._records)

    def reload_if_changed(self) -> bool:
        """Re-read the keys file if its mtime moved; a broken file keeps the old keys."""
        mtime: int | None = None
        if self.keys_file is not None:
            try:
                mtime = os.stat(self.keys_file).st_mtime_ns
            except FileNotFoundError:
                mtime = None
        if self._loaded and mtime == self._mtime:
            return False
        try:
            records = load_keys(self.keys_file) if self.keys_file and mtime is not None else []
        except (ValueError, KeyError, TypeError) as error:
            log.error(
                "keys file %s is invalid, keeping the previous keys: %s", self.keys_file, error
            )
            return False
        self._loaded = True
        self._mtime = mtime
        self._file_records = records
        self._records = [(bytes.fromhex(r.sha256), r) for r in [*records, *self._dev]]
        log.info("loaded %d API key(s)", len(self._records))
        return True

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
