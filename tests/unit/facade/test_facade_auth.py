"""Keys: stored as sha256 only, compared in constant time, 401 envelopes, never logged."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from pathlib import Path

import httpx
import pytest

from facade import auth
from facade.app import create_app
from facade.auth import KeyRing
from facade.errors import APIError
from facade.keys import create_key, hash_key, load_keys, revoke_key
from facade.limits import KeyLimits
from facade.settings import FacadeSettings


def test_keys_file_holds_hashes_not_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, record = create_key(path, "team-a", models=["qwen"], limits=KeyLimits(60, 1000, 2))
    text = path.read_text()
    assert key not in text
    assert hashlib.sha256(key.encode()).hexdigest() in text
    assert record.sha256 == hash_key(key)
    assert os.stat(path).st_mode & 0o777 == 0o600
    [loaded] = load_keys(path)
    assert loaded == record


def test_lookup_compares_every_hash_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    first, _ = create_key(path, "first")
    create_key(path, "second")
    ring = KeyRing(path, dev_keys=["dev-key"])
    calls: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    record = ring.lookup(first)
    assert record is not None and record.name == "first"
    # No early exit on the first (matching) key: all three stored hashes were compared,
    # always against the presented key's digest, never against the key itself.
    assert len(calls) == 3
    assert {a for a, _ in calls} == {hashlib.sha256(first.encode()).digest()}
    assert ring.lookup("tc-wrong") is None


def test_dev_keys_are_kept_hashed_only() -> None:
    ring = KeyRing(None, dev_keys=["plain-dev-key"])
    assert ring.lookup("plain-dev-key") is not None
    assert "plain-dev-key" not in repr(vars(ring))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, auth.MISSING_KEY),
        ("", auth.MISSING_KEY),
        ("Basic abc", auth.MISSING_KEY),
        ("Bearer", auth.MISSING_KEY),
        ("Bearer wrong", auth.INVALID_KEY),
    ],
)
def test_authenticate_refusals_are_401(header: str | None, message: str) -> None:
    ring = KeyRing(None, dev_keys=["good"])
    with pytest.raises(APIError) as info:
        ring.authenticate(header)
    assert info.value.status == 401
    assert info.value.type == "authentication_error" and info.value.code == "invalid_api_key"
    assert info.value.message == message


def test_bearer_scheme_is_case_insensitive_and_key_limits_apply() -> None:
    default = KeyLimits(requests_per_minute=5)
    ring = KeyRing(None, dev_keys=["good"], default_limits=default)
    principal = ring.authenticate("bearer good")
    assert principal.name == "env-key-1" and principal.limits == default


def test_disabled_auth_accepts_anyone() -> None:
    assert KeyRing(None, disabled=True).authenticate(None).name == "anonymous"


def test_revoked_and_added_keys_take_effect_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old, _ = create_key(path, "old")
    ring = KeyRing(path)
    assert ring.lookup(old) is not None
    time.sleep(0.01)  # distinct mtime_ns
    revoke_key(path, "old")
    new, _ = create_key(path, "new")
    assert ring.reload_if_changed()
    assert ring.lookup(old) is None and ring.lookup(new) is not None
    assert not ring.reload_if_changed()


def test_broken_keys_file_keeps_previous_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, _ = create_key(path, "k")
    ring = KeyRing(path)
    path.write_text('{"keys": [{"name": "x", "sha256": "nothex"}]}')
    assert not ring.reload_if_changed()
    assert ring.lookup(key) is not None


def test_model_allow_list_matches_ids_and_aliases_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, _ = create_key(path, "coder", models=["QWEN"])
    principal = KeyRing(path).authenticate(f"Bearer {key}")
    assert principal.allows("Qwen/Qwen2.5-Coder-7B-Instruct", ("qwen",))
    assert not principal.allows("mistralai/Mistral-7B-Instruct-v0.3", ("mistral",))


async def test_routes_need_a_key_and_the_key_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tc-this-must-never-be-logged"
    settings = FacadeSettings(backends=["127.0.0.1:9"], keys_file=None, api_keys=["good-key"])
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        wrong = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
        chat = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            content=b"not json at all",
        )
        missing = await client.get("/v1/models/some/model")
        good = await client.get("/v1/models", headers={"Authorization": "Bearer good-key"})
        open_health = await client.get("/health")
        open_metrics = await client.get("/metrics")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    # Authentication comes before the body is even parsed.
    assert chat.status_code == 401
    assert missing.status_code == 401
    assert good.status_code == 200 and good.json() == {"object": "list", "data": []}
    assert open_health.status_code == 503  # no backend: not ready, but no key needed
    assert open_metrics.status_code == 200
    assert secret not in caplog.text
    assert "good-key" not in caplog.text


@pytest.mark.parametrize("docs", [False, True])
async def test_openapi_docs_only_when_enabled(docs: bool) -> None:
    settings = FacadeSettings(backends=["127.0.0.1:9"], keys_file=None, openapi_docs=docs)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        spec = await client.get("/openapi.json")
        page = await client.get("/docs")
    if not docs:
        assert spec.status_code == 404 and page.status_code == 404
        return
    assert spec.status_code == 200 and page.status_code == 200
    paths = spec.json()["paths"]
    routes = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{model}"}
    assert routes | {"/health"} <= set(paths)
    # The generating routes skip FastAPI's dependency solving but still document their key.
    for route in ("/v1/chat/completions", "/v1/completions"):
        assert paths[route]["post"]["security"] == [{"HTTPBearer": []}]
