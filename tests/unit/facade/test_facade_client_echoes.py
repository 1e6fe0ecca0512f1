"""What the facade sends back about a client's request: bounded, and no key names in /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from facade.app import create_app
from facade.backends import ModelEntry
from facade.errors import model_not_found
from facade.keys import create_key
from facade.limits import KeyLimits, Lease, Limiter, RateLimitExceeded
from facade.settings import FacadeSettings
from tensorchat.v1 import inference_pb2 as pb

NO_BACKEND = ["127.0.0.1:9"]
HUGE_NAME = "m" * 1_000_000


def client_for(settings: FacadeSettings, limiter: Limiter | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings, limiter=limiter))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def test_a_huge_model_name_is_clipped_in_the_404() -> None:
    message = model_not_found(HUGE_NAME).message
    assert len(message) < 400
    assert HUGE_NAME[:256] in message and "1000000 characters" in message


async def test_routes_do_not_echo_a_huge_model_name_or_path() -> None:
    settings = FacadeSettings(backends=NO_BACKEND, keys_file=None, api_keys=["k"])
    auth = {"Authorization": "Bearer k"}
    async with client_for(settings) as client:
        chat = await client.post(
            "/v1/chat/completions",
            headers=auth,
            json={"model": HUGE_NAME, "messages": [{"role": "user", "content": "hi"}]},
        )
        card = await client.get(f"/v1/models/{HUGE_NAME[:60_000]}", headers=auth)
        unknown = await client.get(f"/{HUGE_NAME[:60_000]}")
    for response in (chat, card, unknown):
        assert response.status_code in (404, 503)
        assert len(response.content) < 1000, response.content[:100]


async def test_405_names_the_allowed_methods() -> None:
    settings = FacadeSettings(backends=NO_BACKEND, keys_file=None, api_keys=["k"])
    async with client_for(settings) as client:
        response = await client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


class RefuseAll(Limiter):
    async def acquire(self, key: str, limits: KeyLimits, estimated_tokens: int) -> Lease:
        raise RateLimitExceeded("Rate limit reached for requests.", 1.0)


async def test_metrics_label_keys_by_short_id_never_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    key, record = create_key(path, "acme-corp-production")
    settings = FacadeSettings(backends=NO_BACKEND, keys_file=path, api_keys=[])
    app = create_app(settings, limiter=RefuseAll())
    entry = ModelEntry(info=pb.ModelInfo(id="m"), fingerprint="f")
    monkeypatch.setattr(app.state.facade.pool, "resolve", lambda name: entry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 429
    assert "acme-corp-production" not in metrics
    # The id `tensorchat keys list` shows next to the name.
    short_id = f"sha256:{record.sha256[:12]}"
    assert f'tensorchat_facade_rate_limited_total{{key="{short_id}"}} 1.0' in metrics
