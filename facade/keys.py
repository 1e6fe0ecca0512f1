"""API keys at rest: the keys file (name, sha256, allowed models, limits, created) and its CLI.

Only the sha256 of a key is stored; `tensorchat keys create` prints the key once and it
cannot be recovered afterwards (revoke and create a new one). The file is JSON, written
atomically with mode 0600, so an operator can also keep it in a Kubernetes secret:

    {"version": 1, "keys": [{"name": "team-a", "sha256": "…", "models": null,
      "limits": {"requests_per_minute": 60, "tokens_per_minute": 100000,
                 "max_concurrent": 8}, "created": 1767225600}]}

`models: null` (or absent) allows every model; otherwise a list of ids or aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from facade.limits import KeyLimits

KEY_PREFIX = "tc-"
FILE_VERSION = 1


def hash_key(key: str) -> str:
    """Hex sha256 of a key: what is stored and compared, never the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    # 32 random bytes: as strong as the sha256 it is stored as.
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One API key as stored (no secret in it)."""

    name: str
    sha256: str
    models: tuple[str, ...] | None = None
    limits: KeyLimits | None = None  # None: the facade's default limits
    created: int = 0

    def allows(self, model_id: str, aliases: tuple[str, ...] = ()) -> bool:
        """Whether this key may use the model `model_id` (also known as `aliases`)."""
        if self.models is None or "*" in self.models:
            return True
        names = {model_id.lower(), *(alias.lower() for alias in aliases)}
        return any(allowed.lower() in names for allowed in self.models)

    @property
    def short_id(self) -> str:
        """How the key is shown where its name should not be (`keys list`, /metrics labels):
        a prefix of its hash, which reveals nothing about the key."""
        return f"sha256:{self.sha256[:12]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "models": list(self.models) if self.models is not None else None,
            "limits": dataclasses.asdict(self.limits) if self.limits else None,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: object) -> KeyRecord:
        """One entry of the file; KeysFileError names what is wrong with it."""
        if not isinstance(data, dict):
            raise KeysFileError(f"a key must be an object, got {_kind(data)}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise KeysFileError(f"a key's name must be a non-empty string, got {_kind(name)}")
        digest = data.get("sha256")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest.lower()):
            raise KeysFileError(f"key {name!r}: sha256 must be 64 hex characters")
        models = data.get("models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise KeysFileError(f"key {name!r}: models must be null or a list of strings")
        created = data.get("created", 0)
        if not _is_int(created):
            raise KeysFileError(f"key {name!r}: created must be an integer")
        return cls(
            name=name,
            sha256=digest.lower(),
            models=tuple(models) if models is not None else None,
            limits=_limits_from_json(name, data.get("limits")),
            created=created,
        )


class KeysFileError(ValueError):
    """The keys file's content is not what `save_keys` writes (wrong JSON shape or types)."""


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_LIMIT_FIELDS = tuple(field.name for field in dataclasses.fields(KeyLimits))


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which is an int subclass: not a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _limits_from_json(name: str, limits: object) -> KeyLimits | None:
    if not limits:
        return None
    if not isinstance(limits, dict):
        raise KeysFileError(f"key {name!r}: limits must be an object or null")
    unknown = set(limits) - set(_LIMIT_FIELDS)
    if unknown:
        raise KeysFileError(f"key {name!r}: unknown limits {sorted(unknown)}")
    if not all(_is_int(value) and value >= 0 for value in limits.values()):
        raise KeysFileError(f"key {name!r}: limits must be non-negative integers")
    return KeyLimits(**limits)


def parse_keys(text: str) -> list[KeyRecord]:
    """The records in a keys file's text; KeysFileError for anything `save_keys` would not write.

    The file is input like any other (an operator's editor, a half-synced secret): every
    shape is checked here so that a reader gets one exception type for any bad content.
    """
    if not text.strip():
        # What an editor or a non-atomic copy leaves mid-write: taking it as "no keys" would
        # revoke every key until the next good version. Revoking all is `{"keys": []}`.
        raise KeysFileError('empty (write {"keys": []} to revoke every key)')
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        raise KeysFileError(f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise KeysFileError(f'expected an object {{"keys": [...]}}, got {_kind(data)}')
    items = data.get("keys", [])
    if not isinstance(items, list):
        raise KeysFileError(f'"keys" must be a list, got {_kind(items)}')
    return [KeyRecord.from_json(item) for item in items]


def load_keys(path: Path) -> list[KeyRecord]:
    """Records in the keys file; an absent file holds no keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return parse_keys(text)


def save_keys(path: Path, records: list[KeyRecord]) -> None:
    """Replace the keys file atomically (a reader never sees half a file), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"version": FILE_VERSION, "keys": [r.to_json() for r in records]}, indent=2)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body + "\n")
            # On disk before the rename: after a crash the file is the old or the new one,
            # never an empty one (a rename can reach the disk before the data it names).
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # mkstemp's mode already; kept explicit, it is the contract
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems cannot open a directory: best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_key(
    path: Path,
    name: str,
    *,
    models: list[str] | None = None,
    limits: KeyLimits | None = None,
) -> tuple[str, KeyRecord]:
    """Add a key named `name`; returns the key (shown once) and its stored record."""
    records = load_keys(path)
    if any(r.name == name for r in records):
        raise ValueError(f"a key named {name!r} already exists (revoke it first)")
    key = new_key()
    record = KeyRecord(
        name=name,
        sha256=hash_key(key),
        models=tuple(models) if models else None,
        limits=limits,
        created=int(time.time()),
    )
    save_keys(path, [*records, record])
    return key, record


def revoke_key(path: Path, name: str) -> bool:
    """Remove the key named `name`; False if there was none."""
    records = load_keys(path)
    kept = [r for r in records if r.name != name]
    if len(kept) == len(records):
        return False
    save_keys(path, kept)
    return True


# CLI ---------------------------------------------------------------------------------


def add_keys_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], default_file: Path
) -> None:
    """`tensorchat keys create|list|revoke`."""
    keys = subparsers.add_parser("keys", help="create, list and revoke facade API keys")
    default = Path(os.environ.get("TENSORCHAT_KEYS_FILE", default_file))
    keys_file_help = f"keys file (default: $TENSORCHAT_KEYS_FILE or {default})"
    keys.add_argument("--keys-file", type=Path, default=default, help=keys_file_help)
    # Also after the action (`keys create NAME --keys-file F`), where `serve` and `facade`
    # take it; SUPPRESS: an action that is not given one keeps the value above.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--keys-file", type=Path, default=argparse.SUPPRESS, help=keys_file_help)
    actions = keys.add_subparsers(dest="keys_action", required=True)
    create = actions.add_parser("create", parents=[after], help="create a key and print it once")
    create.add_argument("name")
    create.add_argument("--models", help="comma-separated model ids or aliases (default: all)")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute")
    create.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    create.add_argument("--concurrency", type=int, default=None, help="concurrent requests")
    actions.add_parser(
        "list", parents=[after], help="list keys (names, models, limits; never the keys)"
    )
    revoke = actions.add_parser(
        "revoke", parents=[after], help="delete a key; it stops working within seconds"
    )
    revoke.add_argument("name")
    keys.set_defaults(handler=run_keys_command)


def run_keys_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Runs `keys create|list|revoke`; the exit status."""
    out = out or sys.stdout
    path: Path = args.keys_file
    try:
        return _run_keys_action(args, path, out)
    except KeysFileError as error:
        # Never rewrite a file we could not read: the keys in it would be lost.
        print(f"error: {path} is not a valid keys file ({error}); fix it first", file=sys.stderr)
        return 1


def _run_keys_action(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    if args.keys_action == "create":
        return _create(args, path, out)
    if args.keys_action == "list":
        _list(path, out)
        return 0
    if args.keys_action == "revoke":
        if revoke_key(path, args.name):
            print(f"revoked {args.name!r}", file=out)
            return 0
        print(f"error: no key named {args.name!r} in {path}", file=sys.stderr)
        return 1
    raise AssertionError(args.keys_action)


def _create(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    limits = None
    if any(v is not None for v in (args.rpm, args.tpm, args.concurrency)):
        limits = KeyLimits(args.rpm or 0, args.tpm or 0, args.concurrency or 0)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    try:
        key, _ = create_key(path, args.name, models=models, limits=limits)
    except KeysFileError:
        raise  # the file, not the request: reported by run_keys_command
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # The key alone on stdout (scriptable); the note on stderr.
    print(key, file=out)
    print(f"# key {args.name!r} saved to {path}; it is shown only this once.", file=sys.stderr)
    return 0


def _list(path: Path, out: TextIO) -> None:
    for record in load_keys(path):
        limits = record.limits or KeyLimits()
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        models = ",".join(record.models) if record.models else "*"
        print(
            f"{record.name}\t{record.short_id}\tmodels={models}\t"
            f"rpm={limits.requests_per_minute or '-'}\ttpm={limits.tokens_per_minute or '-'}\t"
            f"concurrency={limits.max_concurrent or '-'}\tcreated={created}",
            file=out,
        )
