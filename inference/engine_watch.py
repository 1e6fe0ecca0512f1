"""Which models' engines hang: requests in the engine, and no token generated for a while.

A hung engine (a wedged GPU, a dead executor thread, a deadlock in its loop) leaves the rest of
the service working: the gRPC server, ListModels and the health service all answer. Without a
check of the engine itself, a facade takes such a replica out of routing at each request's
progress timeout and puts it back at its next good ListModels probe, so a request is sent to
it, and waits out the timeout, every few seconds for as long as it hangs; and Kubernetes
keeps routing to the pod and never restarts it.

The service judges its engines by what they do, not by what they say. An engine that holds
requests (working on them or queued: `Engine.requests_held`, which does not count finished
requests whose outputs a slow client has yet to read) and whose generated-token counter
(`Engine.generated_tokens`) has not moved for `stall_s` since it was first seen holding them
is stalled, and stays stalled until the counter moves. One that generates for anyone is
working; one that holds nothing is idle and is not judged. While any model is stalled the
server reports NOT_SERVING on grpc.health (inference/server.py): the facade's channels stop
making new calls to it (gRPC client-side health checking, facade/backends.py), readiness takes
the pod out of its Service and liveness restarts it if the hang lasts
(deploy/inference/inference.yaml); `engine_stalled` is 1 on /metrics. The status is the
server's, so one stalled model takes every model of a multi-model server out with it.

Requests are still admitted: a refusal would send a facade's whole target down, all the pods
behind a DNS name at once (its UNAVAILABLE means "this backend is down or drains").

A stalled engine that holds nothing gets a one-token request from the server itself
(`InferenceServicer.probe_engine`), one at a time, as TGI's health route runs a forward pass:
an engine that was only slow (a prefill longer than `stall_s`, its request cancelled by the
client) generates and is cleared within a round, before liveness restarts it; a hung one
holds the probe and stays stalled.

A long prefill with no other request on the engine also generates nothing until it ends, so
`stall_s` must exceed the longest prefill a model serves (30 s by default, the facade's
progress timeout: a request silent that long is already ended there).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from inference.registry import ServedModel

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Progress:
    tokens: int  # the engine's generated-token counter when last seen
    since: float | None  # when it last moved or was first seen holding requests; None: idle


class EngineWatch:
    """Checked every few seconds by the server (`check`); `stalled` names the hung engines'
    models. Times are the caller's clock, so tests drive it without waiting."""

    def __init__(self, models: Iterable[ServedModel], stall_s: float, now: float) -> None:
        self._models = list(models)
        self.stall_s = stall_s
        self._progress = {m.id: _Progress(m.engine.generated_tokens, None) for m in self._models}
        self._checked_at = now
        self.stalled: frozenset[str] = frozenset()

    def check(self, now: float) -> bool:
        """Updates `stalled` from each engine's counter; whether it changed."""
        # A round far later than the server's rounds (a few seconds apart) means the whole
        # process was stopped or its loop blocked (SIGSTOP, a stuck call): the engine could
        # not have been seen generating meanwhile, so its quiet time starts again here.
        starved = now - self._checked_at > self.stall_s / 2
        self._checked_at = now
        stalled = set(self.stalled)
        for model in self._models:
            progress = self._progress[model.id]
            tokens, held = model.engine.generated_tokens, model.engine.requests_held
            if tokens != progress.tokens:
                # Holding nothing now, its quiet time starts with the next request it holds.
                progress.tokens, progress.since = tokens, now if held else None
                if model.id in stalled:
                    stalled.discard(model.id)
                    log.warning("engine of %s generates again", model.id)
            elif model.id in stalled:
                continue  # until it generates: a hung engine whose requests left is still hung
            elif not held:
                progress.since = None  # idle: nothing to judge it by
            elif progress.since is None or starved:
                progress.since = now  # its quiet time starts now
            elif now - progress.since >= self.stall_s:
                stalled.add(model.id)
                log.error(
                    "engine of %s has generated no token for %.0f s holding %d request(s): "
                    "reporting NOT_SERVING until it generates",
                    model.id,
                    now - progress.since,
                    held,
                )
        changed = stalled != self.stalled
        self.stalled = frozenset(stalled)
        return changed

    def to_probe(self) -> list[ServedModel]:
        """The stalled models whose engine holds nothing: only a request can show it works."""
        return [m for m in self._models if m.id in self.stalled and not m.engine.requests_held]
