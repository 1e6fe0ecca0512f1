"""Facade configuration: one pydantic-settings model read from `TENSORCHAT_*` env vars and flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tensorchat.limits import MAX_CHOICES
from tensorchat.logs import LogFormat

DEFAULT_KEYS_FILE = Path("~/.config/tensorchat/keys.json").expanduser()


def _split_csv(value: object) -> object:
    # Env vars carry lists as "a,b,c"; JSON would be unfriendly for a host list or keys.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class FacadeSettings(BaseSettings):
    """Everything the facade needs; env prefix `TENSORCHAT_` (e.g. `TENSORCHAT_BACKENDS`)."""

    model_config = SettingsConfigDict(env_prefix="TENSORCHAT_", extra="ignore")

    # Inference targets: "host:port", or any gRPC target such as "dns:///svc.ns:50051"
    # (a headless service; gRPC's round_robin spreads calls over every address).
    backends: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:50051"])
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # Keys file written by `tensorchat keys create`; read if it exists, re-read when it changes.
    keys_file: Path | None = DEFAULT_KEYS_FILE
    # Development keys (plain text, comma-separated in TENSORCHAT_API_KEYS); they get the
    # default limits below and access to every model.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Serve without keys (a laptop). Never the default: with no keys and this off, every
    # request gets 401.
    auth_disabled: bool = False

    # Per-key limits for dev keys and keys that do not set their own; 0 means unlimited.
    default_requests_per_minute: int = Field(0, ge=0)
    default_tokens_per_minute: int = Field(0, ge=0)
    default_max_concurrent: int = Field(0, ge=0)
    # Whole-facade cap on in-flight chat requests (0: none); past it, 429 and Retry-After.
    max_concurrent_requests: int = Field(0, ge=0)
    # Redis that every replica shares the per-key limits through, e.g. redis://redis:6379/0
    # (facade/limits_redis.py). Unset: limits live in this process, exact for one replica.
    # Secret: the URL may carry a password.
    redis_url: SecretStr | None = None
    # With Redis unreachable: "open" admits requests without per-key limits, "closed" refuses
    # them with 503 and Retry-After. Open by default: keys are still checked and the cap
    # above still holds, so a limits-store outage does not become an API outage.
    redis_failure_mode: Literal["open", "closed"] = "open"
    # With Redis, the Responses API keeps responses (`store`, `previous_response_id`, GET
    # /v1/responses/{id}) this long after they ended; without Redis it keeps none.
    responses_ttl_s: float = Field(24 * 3600.0, gt=0.0)

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # HTTP connections (facade/httpguard.py). A request line and headers larger than this
    # in all, or with more header fields, get 431 before they are parsed.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    max_headers: int = Field(100, ge=1)
    # A connection whose request head is not complete this long after it opened (or
    # after the head's first byte, for a later request on it) gets 408 and is closed.
    header_timeout_s: float = Field(10.0, gt=0.0)
    # A request whose body is not complete this long after its head gets 408 and the
    # connection is closed: a whole-body deadline, so a body sent a byte at a time cannot
    # hold a connection (nginx's client_body_timeout bounds only the gap between reads).
    body_timeout_s: float = Field(30.0, gt=0.0)
    # An idle keep-alive connection is closed after this long.
    keep_alive_timeout_s: float = Field(5.0, gt=0.0)
    # Connections served at once; past it a new one gets 503 and is closed (0: no cap).
    # Keep it under the process's open-file limit (`ulimit -n`).
    max_connections: int = Field(4096, ge=0)
    # Each request's wall-clock budget, sent as StoppingCriteria.time_limit_ms (0: none);
    # its unfinished choices then end with finish_reason "length".
    request_time_limit_s: float = Field(0.0, ge=0.0)
    # How often backends are asked for their models (a lost backend comes back within this).
    refresh_interval_s: float = Field(5.0, gt=0.0)
    # A GenerateMany stream stays on the inference replica it opened on; after this many
    # seconds, or generations started on it, new requests go to a fresh stream (placed by
    # gRPC's round_robin), so scaled-out or restarted replicas get traffic. Running
    # generations finish on the old stream. 0: no such limit (facade/backend_streams.py).
    stream_max_age_s: float = Field(60.0, ge=0.0)
    stream_max_generations: int = Field(1000, ge=0)
    # Deadline of the ListModels probe. A routed backend that misses it stays routed, as busy,
    # while its streams still bring messages (facade/backends.py, `_sending`).
    probe_timeout_s: float = Field(2.0, gt=0.0)
    # gRPC keepalive on the backend channels: a ping every this many seconds, and a backend
    # that does not answer one within the timeout (frozen, its host gone) is disconnected, so
    # its streams fail instead of waiting for ever.
    backend_keepalive_s: float = Field(10.0, gt=0.0)
    backend_keepalive_timeout_s: float = Field(5.0, gt=0.0)
    # A generation with no event (token, finish) from its backend for this long ends: retried
    # on another replica if nothing reached the client yet, else with an error event (0: never).
    progress_timeout_s: float = Field(30.0, ge=0.0)
    # On SIGTERM, running requests get this long to finish; those still running then end with
    # a 503 (a stream: an error event and [DONE]).
    shutdown_grace_s: int = Field(30, ge=0)  # whole seconds, as uvicorn takes it
    # How often the keys file is checked for changes.
    keys_reload_interval_s: float = Field(2.0, gt=0.0)
    # The largest `n` accepted; n choices cost n times the compute. At most what the
    # inference service accepts (tensorchat.limits), which is also the default.
    max_n: int = Field(MAX_CHOICES, ge=1, le=MAX_CHOICES)

    # Serve /docs and /openapi.json (without a key). Off by default: every route but health
    # and metrics needs a key.
    openapi_docs: bool = False

    # One line per request (facade/request_context.py), in the log format.
    access_log: bool = True
    log_level: str = "info"
    log_format: LogFormat = "text"

    @field_validator("backends", "api_keys", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("backends")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one backend is needed")
        return value
