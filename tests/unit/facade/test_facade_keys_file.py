"""The keys file as untrusted input: any content keeps the last good keys, reloads go on."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from facade import keys as keys_module
from facade.auth import KeyRing
from facade.keys import KeysFileError, create_key, parse_keys, run_keys_command, save_keys
from facade.keywatch import reload_keys_forever, start_key_reloads
from facade.metrics import FacadeMetrics
from tensorchat.cli import build_parser

GOOD_HASH = "a" * 64
BAD_CONTENTS = {
    "empty (a write in progress)": "",
    "blank": " \n",
    "a list": "[]",
    "null": "null",
    "a string": '"keys"',
    "a number": "42",
    "keys not a list": '{"keys": {}}',
    "a key not an object": '{"keys": [1]}',
    "a name not a string": json.dumps({"keys": [{"name": 1, "sha256": GOOD_HASH}]}),
    "no sha256": '{"keys": [{"name": "k"}]}',
    "models a string": json.dumps({"keys": [{"name": "k", "sha256": GOOD_HASH, "models": "q"}]}),
    "limits a list": json.dumps({"keys": [{"name": "k", "sha256": GOOD_HASH, "limits": [1]}]}),
    "unknown limit": json.dumps(
        {"keys": [{"name": "k", "sha256": GOOD_HASH, "limits": {"rpm": 1}}]}
    ),
    "limit a string": json.dumps(
        {"keys": [{"name": "k", "sha256": GOOD_HASH, "limits": {"max_concurrent": "2"}}]}
    ),
    "created a string": json.dumps({"keys": [{"name": "k", "sha256": GOOD_HASH, "created": "x"}]}),
    "a partial write": '{"version": 1, "keys": [{"name": "k", "sha',
    "absurd nesting": "[" * 100_000,
}


@pytest.mark.parametrize("text", BAD_CONTENTS.values(), ids=BAD_CONTENTS.keys())
def test_any_bad_content_is_one_error_type(text: str) -> None:
    with pytest.raises(KeysFileError):
        parse_keys(text)


@pytest.mark.parametrize("text", BAD_CONTENTS.values(), ids=BAD_CONTENTS.keys())
def test_bad_content_keeps_the_last_good_keys_and_reloads_go_on(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    kept, _ = create_key(path, "kept")
    revoked, _ = create_key(path, "revoked")
    ring = KeyRing(path)
    path.write_text(text)
    with caplog.at_level(logging.ERROR, logger="facade.auth"):
        assert not ring.reload_if_changed()
        assert not ring.reload_if_changed()  # the same bad version: not read or logged again
    assert ring.lookup(kept) is not None and ring.lookup(revoked) is not None
    assert ring.reload_failures == 1
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    # The operator repairs the file and revokes a key: that takes effect.
    path.unlink()
    create_key(path, "kept-again")
    assert ring.reload_if_changed()
    assert ring.lookup(revoked) is None and ring.lookup(kept) is None
    assert ring.reload_failures == 1


def test_unreadable_file_keeps_keys_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    key, _ = create_key(path, "k")
    ring = KeyRing(path)
    path.unlink()
    path.mkdir()  # reading a directory fails with an OSError on every platform
    with caplog.at_level(logging.ERROR, logger="facade.auth"):
        assert not ring.reload_if_changed()
        assert not ring.reload_if_changed()
    assert ring.lookup(key) is not None
    assert ring.reload_failures == 1
    assert len(caplog.records) == 1


def test_a_rewrite_within_one_mtime_tick_is_still_seen(tmp_path: Path) -> None:
    # An editor writing in place: a partial file, then the whole one, with the same mtime.
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [')
    ring = KeyRing(path)
    assert ring.reload_failures == 1
    mtime = os.stat(path).st_mtime_ns
    key, _ = create_key(tmp_path / "other.json", "k")
    path.write_text((tmp_path / "other.json").read_text())
    os.utime(path, ns=(mtime, mtime))
    assert ring.reload_if_changed()
    assert ring.lookup(key) is not None


def test_save_keys_syncs_the_data_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(keys_module.os, "fsync", fsync)
    monkeypatch.setattr(keys_module.os, "replace", replace)
    path = tmp_path / "keys.json"
    save_keys(path, [])
    # The file's data, then the rename, then the directory entry.
    assert events == ["fsync", "replace", "fsync"]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temp file left


def test_metrics_export_the_last_reload_and_the_failures(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key(path, "k")
    ring = KeyRing(path, clock=lambda: 1767225600.0)
    metrics = FacadeMetrics()
    metrics.watch_keys(ring)
    path.write_text("[]")
    ring.reload_if_changed()
    text = metrics.render().decode()
    assert "tensorchat_facade_keys_last_reload_timestamp_seconds 1.7672256e+09" in text
    assert "tensorchat_facade_keys_reload_failures_total 1.0" in text


class FlakyRing:
    """Fails its first reload with a bug-like error, then counts reloads."""

    def __init__(self) -> None:
        self.calls = 0
        self.reloaded = asyncio.Event()

    def reload_if_changed(self) -> bool:
        self.calls += 1
        if self.calls == 1:
            raise AttributeError("'list' object has no attribute 'get'")
        self.reloaded.set()
        return False


async def test_the_reload_loop_survives_an_error_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ring = FlakyRing()
    task = asyncio.create_task(reload_keys_forever(ring, 0.001))
    await asyncio.wait_for(ring.reloaded.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ring.calls >= 2
    assert "reloading the keys file failed" in caplog.text


class Fatal(BaseException):
    """Something no round catches: the task ends."""


class FatalRing:
    def reload_if_changed(self) -> bool:
        raise Fatal


async def test_an_unexpected_end_of_the_reload_task_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = start_key_reloads(FatalRing(), 0.001)
    with pytest.raises(Fatal):
        await task
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "revocations too" in record.getMessage()


async def test_cancelling_the_reload_task_at_shutdown_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = start_key_reloads(FlakyRing(), 60)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_keys_commands_refuse_a_bad_file_and_leave_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[]")
    for argv in (["create", "k"], ["list"], ["revoke", "k"]):
        args = build_parser().parse_args(["keys", "--keys-file", str(path), *argv])
        assert run_keys_command(args) == 1
        assert "is not a valid keys file" in capsys.readouterr().err
    assert path.read_text() == "[]"
