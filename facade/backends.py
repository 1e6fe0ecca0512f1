"""Inference backends: gRPC channels, model routing by id or alias, load spreading, health.

Each configured target gets one `grpc.aio` channel. A background task asks every target
for its models (ListModels) every `refresh_interval_s`; a target that fails the probe, or
whose generation fails with UNAVAILABLE, leaves the routing table at once and comes back on
its next good probe, without a restart. Busy is not down: a target that misses the probe's
deadline, or stalls a generation, while its streams still bring messages stays routed
(`_sending`); one silent on its streams too is hung and leaves.

Each channel also watches its servers' grpc.health status (gRPC's client-side health checking,
`healthCheckConfig`): a server that says NOT_SERVING, because its engine has stalled
(inference/engine_watch.py) or it drains, gets no new calls. A target that names one server
then fails its next probe and leaves routing until it serves again; behind a DNS target, that
pod gets no new streams, and the streams already on it move off as they are rotated
(`StreamLimits`, `TENSORCHAT_STREAM_MAX_AGE_S`). A server without the health service (older
than it) is taken as serving.

Routing: a model name is matched case-insensitively against every id and alias the
backends report. Several targets serving the same id are replicas; each request goes to
the replica with the fewest outstanding requests from this facade (ties: the one picked
least often). A target may also be a DNS name with many addresses
(`dns:///inference.ns.svc:50051`, a Kubernetes headless service): its channel uses gRPC's
round_robin policy, so gRPC itself spreads calls over the addresses behind it.

Each target's requests ride a few multiplexed GenerateMany streams (facade.backend_streams),
up to four for a target that may stand for several addresses, so that round_robin has
streams to place. A target that names one server (`streams_for`) gets one stream: nothing
to spread, and one stream batches every request's messages together. At 8 streams of
tokens that cut CPU per token by a quarter in both processes; 0.83 and 0.82 of before per
short request (benchmarks/README.md, issue 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from facade.backend_streams import MAX_STREAMS_PER_BACKEND, BackendStreams, StreamLimits
from facade.errors import APIError, clip, model_not_found
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DOWN_PROBE_INTERVAL_S = 0.25

_SERVICE_CONFIG = {
    # One channel per target may stand for many addresses; spread calls over all of them.
    "loadBalancingConfig": [{"round_robin": {}}],
    # ... but not to an address whose grpc.health status for the service is NOT_SERVING
    # (gRPC proposal A17; UNIMPLEMENTED counts as serving). Module docstring.
    "healthCheckConfig": {"serviceName": pb.DESCRIPTOR.services_by_name["Inference"].full_name},
}
_CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    # Re-resolve DNS promptly when a replica appears or goes away.
    ("grpc.dns_min_time_between_resolutions_ms", 5000),
    # A target that is not up yet (a model still loading) is retried at least twice a second,
    # not on gRPC's default backoff (1 s growing to 120 s), which left a just-loaded model
    # unnoticed for ~10 s; with the probes below it is routed to within ~1 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def streams_for(target: str) -> int:
    """GenerateMany streams to open to `target`: one where it names one server (a unix
    socket, localhost, an IP address, an ipv4:/ipv6: list of one), else up to
    MAX_STREAMS_PER_BACKEND, since a DNS name may stand for many addresses."""
    scheme, _, rest = target.partition(":")
    if scheme in ("unix", "unix-abstract", "vsock"):
        return 1
    if scheme in ("ipv4", "ipv6"):
        return 1 if "," not in rest else MAX_STREAMS_PER_BACKEND
    host = target.rpartition(":")[0] if ":" in target else target
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return 1
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return MAX_STREAMS_PER_BACKEND  # a name: DNS may give several addresses
    return 1


def _channel_options(keepalive_s: float, keepalive_timeout_s: float) -> list[tuple[str, str | int]]:
    """The channel options with keepalive: a backend that stops answering pings (SIGSTOP, a
    lost host) is disconnected, and every call on it fails, instead of hanging for ever."""
    return [
        *_CHANNEL_OPTIONS,
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        # Ping idle channels too (a stream waiting for its first token carries no data), and
        # without a limit on pings between data frames; the service permits both
        # (inference.server.KEEPALIVE_PERMIT_OPTIONS).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model as the facade knows it: its info and fingerprint, from any replica."""

    info: pb.ModelInfo
    fingerprint: str

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(self.info.aliases)


@dataclass(eq=False)
class Backend:
    """One inference target and what it last reported."""

    target: str
    channel: grpc.aio.Channel
    stub: pb_grpc.InferenceAsyncStub  # what InferenceStub(aio channel) returns
    generations: BackendStreams  # chat requests go over its GenerateMany streams
    models: dict[str, pb.ModelInfo] = field(default_factory=dict)
    healthy: bool = False
    outstanding: int = 0
    picks: int = 0
    last_error: str | None = None


def no_backend(model: str) -> APIError:
    """A known model with no healthy replica right now: worth retrying shortly."""
    return APIError(
        503,
        f"No backend is serving `{clip(model)}` right now; please retry shortly.",
        headers={"Retry-After": "1"},
    )


def fingerprint(info: pb.ModelInfo) -> str:
    # Changes whenever the serving configuration does (engine, checkpoint: `created` is the
    # checkpoint's time), as OpenAI's does; a restart on the same model keeps it.
    digest = hashlib.sha256(f"{info.id}|{info.engine}|{info.created}".encode()).hexdigest()
    return f"fp_{digest[:10]}"


def _keep_as_busy(backend: Backend, what: str, reason: str) -> None:
    """Logs, once per reason, that `backend` stays routed although it `what`."""
    if reason != backend.last_error:
        log.warning("backend %s %s (%s): kept in routing as busy", backend.target, what, reason)
    backend.last_error = reason


class BackendPool:
    """Channels to the inference targets, the model routing table and its refresh loop."""

    def __init__(
        self,
        targets: list[str],
        *,
        refresh_interval_s: float = 5.0,
        probe_timeout_s: float = 2.0,
        keepalive_s: float = 10.0,
        keepalive_timeout_s: float = 5.0,
        progress_timeout_s: float = 0.0,
        on_change: Callable[[BackendPool], None] | None = None,
        stream_limits: StreamLimits | None = None,
    ) -> None:
        self.refresh_interval_s = refresh_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._channel_options = _channel_options(keepalive_s, keepalive_timeout_s)
        self._progress_timeout_s = progress_timeout_s
        self._on_change = on_change
        self._stream_limits = stream_limits
        self.targets = list(targets)
        # Channels are made in start(): a grpc.aio channel belongs to the loop it is made on.
        self.backends: list[Backend] = []
        # lower-cased id or alias -> canonical id; canonical id -> entry / healthy replicas.
        self._names: dict[str, str] = {}
        self._entries: dict[str, ModelEntry] = {}
        self._replicas: dict[str, list[Backend]] = {}
        # Every name ever served: a known model with no replica up is a 503, not a 404.
        self._seen: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the channels, probe once (a target being down is fine), start the refresh loop."""
        for target in self.targets:
            channel = grpc.aio.insecure_channel(target, options=self._channel_options)
            stub = pb_grpc.InferenceStub(channel)
            streams = BackendStreams(
                stub,
                self._stream_limits,
                progress_timeout_s=self._progress_timeout_s,
                max_streams=streams_for(target),
            )
            self.backends.append(Backend(target, channel, stub, streams))
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="backend-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(b.generations.aclose() for b in self.backends))
        await asyncio.gather(*(b.channel.close(None) for b in self.backends))
        self.backends = []
        self._rebuild()

    async def _refresh_loop(self) -> None:
        while True:
            # A target that is down is probed four times a second (a failed probe costs
            # nothing: the channel answers UNAVAILABLE at once), so a starting or restarted
            # inference service is routed to as soon as it listens.
            down = any(not b.healthy for b in self.backends)
            await asyncio.sleep(
                min(self.refresh_interval_s, DOWN_PROBE_INTERVAL_S)
                if down
                else self.refresh_interval_s
            )
            try:
                await self.refresh()
            except Exception:  # the loop must survive anything a probe throws
                log.exception("backend refresh failed")

    async def refresh(self) -> None:
        """Ask every target for its models and rebuild the routing table."""
        await asyncio.gather(*(self._probe(b) for b in self.backends))
        self._rebuild()

    async def _probe(self, backend: Backend) -> None:
        try:
            response = await backend.stub.ListModels(
                pb.ListModelsRequest(), timeout=self.probe_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            reason = f"{error.code().name}: {error.details()}"
            if (
                backend.healthy
                and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                # Running nothing of ours, there is nothing to judge it by: busy, as a probe
                # that merely came late; a request sent there would show a hang as a stall.
                and (not backend.generations.running or self._sending(backend))
            ):
                self._slow_probe(backend, reason)
                return
            # Logged when it goes down, and when the reason changes: a target that never came
            # up (wrong address, nothing listening) is logged too, once per reason.
            if backend.healthy or reason != backend.last_error:
                log.warning("backend %s is down: %s", backend.target, reason)
            backend.healthy, backend.models = False, {}
            backend.last_error = reason
            return
        if not backend.healthy:
            log.info("backend %s is up with %d model(s)", backend.target, len(response.models))
        elif backend.last_error is not None:
            log.info("backend %s answers its probe in time again", backend.target)
        backend.healthy = True
        backend.last_error = None
        backend.models = {m.id: m for m in response.models}

    def _sending(self, backend: Backend) -> bool:
        """Busy, not hung: its streams brought something within the progress timeout (with
        none set, it is never judged hung). A backend whose loop or engine hangs sends nothing
        on any stream, `waiting` events included (inference.generate_many)."""
        if not self._progress_timeout_s:
            return True
        now = asyncio.get_running_loop().time()
        return backend.generations.quiet_for(now) < self._progress_timeout_s

    def _slow_probe(self, backend: Backend, reason: str) -> None:
        """A routed backend that did not answer its probe in time, but is still sending on its
        streams, stays routed: it is busy.

        Its channel is up (a dead or unreachable one fails UNAVAILABLE at once), so what was
        slow is its event loop, saturated by the requests it serves: 5 streams of n=16 with
        top_logprobs 20 on 2 cores kept ListModels waiting up to 19 s, and taking the backend
        out of routing turned every other client's request into a 503 while those streams
        went on being served (benchmarks/overload.py). One that is also silent on its streams
        is hung and goes down; a frozen one is found by the channel's keepalive too.
        """
        _keep_as_busy(backend, "is slow to answer its probe", reason)

    def stalled(self, backend: Backend, reason: str) -> None:
        """A generation got nothing from `backend` for the progress timeout. Hung if its streams
        brought nothing else for as long either: out of routing until it answers a probe.
        Else it is busy (saturated, or its engine's queue is long) and stays routed."""
        if not self._sending(backend):
            self.mark_down(backend, reason)
            return
        _keep_as_busy(backend, "stalled a request while still sending others", reason)

    def mark_down(self, backend: Backend, reason: str) -> None:
        """Take a target out of routing now (its RPC failed UNAVAILABLE); a probe restores it."""
        if backend.healthy:
            log.warning("backend %s is unavailable: %s", backend.target, reason)
        backend.healthy, backend.models, backend.last_error = False, {}, reason
        self._rebuild()

    def _rebuild(self) -> None:
        names: dict[str, str] = {}
        entries: dict[str, ModelEntry] = {}
        replicas: dict[str, list[Backend]] = {}
        for backend in self.backends:
            if not backend.healthy:
                continue
            for model_id, info in backend.models.items():
                replicas.setdefault(model_id, []).append(backend)
                entries.setdefault(model_id, ModelEntry(info, fingerprint(info)))
                for name in (model_id, *info.aliases):
                    names.setdefault(name.lower(), model_id)
        self._names, self._entries, self._replicas = names, entries, replicas
        self._seen.update(names)
        if self._on_change is not None:
            self._on_change(self)

    @property
    def ready(self) -> bool:
        """At least one backend serves at least one model."""
        return bool(self._entries)

    def models(self) -> list[ModelEntry]:
        return sorted(self._entries.values(), key=lambda e: e.id)

    def resolve(self, name: str) -> ModelEntry:
        """The model called `name` (id or alias, any case); 404 if unknown, 503 if down."""
        model_id = self._names.get(name.lower())
        if model_id is not None:
            return self._entries[model_id]
        if name.lower() in self._seen or not self.ready:
            raise no_backend(name)
        raise model_not_found(name)

    def candidates(self, model_id: str) -> list[Backend]:
        """Healthy replicas of `model_id`, the least loaded first."""
        replicas = self._replicas.get(model_id, [])
        return sorted(replicas, key=lambda b: (b.outstanding, b.picks))

    @contextlib.contextmanager
    def use(self, backend: Backend) -> Iterator[Backend]:
        """Count a request against `backend` while it runs (least-outstanding routing)."""
        backend.outstanding += 1
        backend.picks += 1
        try:
            yield backend
        finally:
            backend.outstanding -= 1
