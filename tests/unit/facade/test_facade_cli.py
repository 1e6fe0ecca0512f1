"""`tensorchat keys create|list|revoke` and `tensorchat facade` flags/env -> settings."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from facade.cli import register, settings_from_args
from facade.keys import hash_key, load_keys
from facade.settings import FacadeSettings
from tensorchat.cli import main
from tensorchat.limits import MAX_CHOICES


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="tensorchat")
    root.add_argument("--log-level", default="info")
    register(root.add_subparsers(dest="command", required=True))
    return root


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.handler(args))


def test_create_prints_the_key_once_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "sub" / "keys.json"
    assert (
        run(
            [
                "keys",
                "--keys-file",
                str(keys),
                "create",
                "team-a",
                "--models",
                "qwen, mistral",
                "--rpm",
                "60",
                "--tpm",
                "5000",
                "--concurrency",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("tc-") and len(key) > 40
    assert "shown only this once" in out.err
    [record] = load_keys(keys)
    assert record.name == "team-a" and record.sha256 == hash_key(key)
    assert record.models == ("qwen", "mistral")
    assert record.limits is not None
    assert (
        record.limits.requests_per_minute,
        record.limits.tokens_per_minute,
        record.limits.max_concurrent,
    ) == (60, 5000, 4)
    assert key not in keys.read_text()
    assert json.loads(keys.read_text())["version"] == 1

    # list shows names, models and limits, never the key.
    assert run(["keys", "--keys-file", str(keys), "list"]) == 0
    listed = capsys.readouterr().out
    assert "team-a" in listed and "rpm=60" in listed and "models=qwen,mistral" in listed
    assert key not in listed and record.sha256 not in listed  # only a short prefix


def test_duplicate_names_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.json"
    assert run(["keys", "--keys-file", str(keys), "create", "a"]) == 0
    assert run(["keys", "--keys-file", str(keys), "create", "a"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert len(load_keys(keys)) == 1


def test_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.json"
    run(["keys", "--keys-file", str(keys), "create", "a"])
    run(["keys", "--keys-file", str(keys), "create", "b"])
    assert run(["keys", "--keys-file", str(keys), "revoke", "a"]) == 0
    assert [r.name for r in load_keys(keys)] == ["b"]
    assert run(["keys", "--keys-file", str(keys), "revoke", "a"]) == 1
    assert "no key named" in capsys.readouterr().err


def test_keys_file_defaults_to_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "env-keys.json"
    monkeypatch.setenv("TENSORCHAT_KEYS_FILE", str(keys))
    assert run(["keys", "create", "x"]) == 0
    assert [r.name for r in load_keys(keys)] == ["x"]


def test_keys_file_may_follow_the_action_as_in_serve_and_facade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TENSORCHAT_KEYS_FILE", str(tmp_path / "not-this.json"))
    keys = tmp_path / "keys.json"
    # The `tensorchat` entry point, as a user types it.
    assert main(["keys", "create", "ci", "--rpm", "5", "--keys-file", str(keys)]) == 0
    assert main(["keys", "list", "--keys-file", str(keys)]) == 0
    assert "ci" in capsys.readouterr().out
    assert main(["keys", "revoke", "ci", "--keys-file", str(keys)]) == 0
    assert load_keys(keys) == []
    # Before the action, as until now, still works; the action's default does not undo it.
    assert main(["keys", "--keys-file", str(keys), "create", "ops"]) == 0
    assert [r.name for r in load_keys(keys)] == ["ops"]
    assert not (tmp_path / "not-this.json").exists()


def test_facade_flags_override_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TENSORCHAT_BACKENDS", "a:1, b:2")
    monkeypatch.setenv("TENSORCHAT_API_KEYS", "k1,k2")
    monkeypatch.setenv("TENSORCHAT_DEFAULT_REQUESTS_PER_MINUTE", "30")
    settings = settings_from_args(parser().parse_args(["facade"]))
    assert settings.backends == ["a:1", "b:2"]
    assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]
    assert settings.default_requests_per_minute == 30
    assert "k1" not in repr(settings)  # secrets stay out of reprs and logs

    args = parser().parse_args(
        [
            "facade",
            "--backends",
            "dns:///inference:50051",
            "--port",
            "9",
            "--keys-file",
            str(tmp_path / "k.json"),
            "--no-auth",
        ]
    )
    settings = settings_from_args(args)
    assert settings.backends == ["dns:///inference:50051"]
    assert settings.port == 9 and settings.auth_disabled
    assert settings.keys_file == tmp_path / "k.json"


def test_settings_refuse_an_empty_backend_list() -> None:
    with pytest.raises(ValueError):
        FacadeSettings(backends=[])


def test_max_n_is_at_most_what_the_inference_service_accepts() -> None:
    assert FacadeSettings(backends=["x:1"]).max_n == MAX_CHOICES
    assert FacadeSettings(backends=["x:1"], max_n=2).max_n == 2
    with pytest.raises(ValueError, match="max_n"):
        FacadeSettings(backends=["x:1"], max_n=MAX_CHOICES + 1)


def test_env_keys_file_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TENSORCHAT_KEYS_FILE", os.fspath(tmp_path / "x.json"))
    assert FacadeSettings().keys_file == tmp_path / "x.json"


def test_redis_settings_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FacadeSettings().redis_url is None  # in-memory limits unless told otherwise
    assert FacadeSettings().redis_failure_mode == "open"
    monkeypatch.setenv("TENSORCHAT_REDIS_URL", "redis://:hunter2@redis:6379/0")
    monkeypatch.setenv("TENSORCHAT_REDIS_FAILURE_MODE", "closed")
    settings = settings_from_args(parser().parse_args(["facade"]))
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:hunter2@redis:6379/0"
    assert settings.redis_failure_mode == "closed"
    assert "hunter2" not in repr(settings)  # the URL may carry Redis' password

    args = ["facade", "--redis-url", "redis://other:6380/1", "--redis-failure-mode", "open"]
    settings = settings_from_args(parser().parse_args(args))
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://other:6380/1"
    assert settings.redis_failure_mode == "open"
