"""The generating routes are served without FastAPI's dependency injection (facade/routes/
direct.py), and still authenticate first, name the key in the access log and refuse as before."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import fastapi.routing
import httpx
import pytest
from starlette.routing import Match
from starlette.types import Scope

from facade.app import create_app
from facade.auth import INVALID_KEY, MISSING_KEY
from facade.routes.direct import DirectRoute
from facade.settings import FacadeSettings

GENERATING = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/chat/completions")


@pytest.fixture
def no_dependency_injection(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """FastAPI's dependency solving and its routes' exit stacks (for dependencies with
    `yield`), made to fail: a route that uses them answers 500."""
    used: list[str] = []

    async def refuse(*_: Any, **__: Any) -> NoReturn:
        used.append("solve_dependencies")
        raise AssertionError("the generating routes skip FastAPI's dependency injection")

    def no_stack() -> NoReturn:
        used.append("AsyncExitStack")
        raise AssertionError("the generating routes need no exit stack")

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", refuse)
    monkeypatch.setattr(fastapi.routing, "AsyncExitStack", no_stack)
    return used


@pytest.mark.parametrize("path", GENERATING)
async def test_generating_routes_authenticate_without_dependency_injection(
    path: str, no_dependency_injection: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = FacadeSettings(backends=["127.0.0.1:9"], keys_file=None, api_keys=["good-key"])
    transport = httpx.ASGITransport(app=create_app(settings))
    caplog.set_level(logging.INFO, logger="tensorchat.facade.access")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        missing = await client.post(path, content=b"{}")
        wrong = await client.post(path, headers={"Authorization": "Bearer bad"}, content=b"{}")
        good = await client.post(path, headers={"Authorization": "Bearer good-key"}, content=b"{")
    assert missing.status_code == 401 and missing.json()["error"]["message"] == MISSING_KEY
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == INVALID_KEY
    # Past authentication: the body is parsed (and refused) by admission.
    assert good.status_code == 400 and good.json()["error"]["type"] == "invalid_request_error"
    assert no_dependency_injection == []
    # The access log names the caller's key (by its name) on the request that passed.
    lines = [r.__dict__["fields"] for r in caplog.records if r.name == "tensorchat.facade.access"]
    assert [(line["status"], line["key"] is not None) for line in lines] == [
        (401, False),
        (401, False),
        (400, True),
    ]


async def test_other_routes_still_use_dependency_injection(
    no_dependency_injection: list[str],
) -> None:
    settings = FacadeSettings(backends=["127.0.0.1:9"], keys_file=None, api_keys=["good-key"])
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(AssertionError):
            await client.get("/v1/models", headers={"Authorization": "Bearer good-key"})
    assert no_dependency_injection == ["AsyncExitStack"]


async def test_a_generating_request_is_matched_against_its_route_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Routes added as the app's own (facade/app.py add_routes), not behind FastAPI's
    # included-router wrapper, which matches every request twice.
    matched: list[str] = []
    real_matches = DirectRoute.matches

    def counting(route: DirectRoute, scope: Scope) -> tuple[Match, Scope]:
        match, child = real_matches(route, scope)
        if match is Match.FULL:
            matched.append(route.path)
        return match, child

    monkeypatch.setattr(DirectRoute, "matches", counting)
    settings = FacadeSettings(backends=["127.0.0.1:9"], keys_file=None, api_keys=["good-key"])
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        reply = await client.post("/v1/completions", content=b"{}")
    assert reply.status_code == 401
    assert matched == ["/v1/completions"]
