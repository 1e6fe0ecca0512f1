"""Which models' engines hang: requests in the engine, and no token generated for a while.

A hung engine (a wedged GPU, a dead executor thread, a deadlock in its loop) leaves the rest of
the service working: the gRPC server, ListModels and the health service all answer. Without a
check of the engine itself, the facade takes such a replica out of routing at each request's
progress timeout and puts it back at its next good ListModels probe, so a request is sent to
it, and waits out the timeout, every few seconds for as long as it hangs; and Kubernetes
keeps routing to the pod.

The service judges its engines by what they do, not by what they say: an engine that has
requests in it (running or queued: `RequestRunner.in_engine`) and whose generated-token
counter (`Engine.generated_tokens`) has not moved for `stall_s` is stalled, and stays stalled
until the counter moves. One that generates for anyone is working; one with nothing to do is
idle and is not judged. While a model is stalled:
- grpc.health reports NOT_SERVING (readiness takes the pod out; liveness restarts it if the
  hang lasts: deploy/inference/inference.yaml), and `engine_stalled` is 1 on /metrics;
- while its engine still holds requests, its new requests are refused with UNAVAILABLE
  (callers retry on another replica at once) and ListModels leaves it out (the facade stops
  routing it there at its next probe);
- once its engine holds none (the facade's progress timeout cancelled them), one request at
  a time is let in as a trial, as a circuit breaker's half-open state: an engine that was only
  slow generates and is cleared, a hung one holds the trial and refuses the rest again.
  Without the trial a single replica, the facade's only one (`tensorchat serve`), would
  refuse its model until restarted after one long prefill.

A long prefill with no other request on the engine also generates nothing until it ends, so
`stall_s` must exceed the longest prefill a model serves (30 s by default, the facade's
progress timeout: a request silent that long is already ended there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from inference.registry import ServedModel

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Progress:
    tokens: int  # the engine's generated-token counter when last seen
    since: float  # when it last moved, or the engine was last idle


class EngineWatch:
    """Checked every few seconds by the server (`check`); `stalled` names the hung engines'
    models. Times are the caller's clock, so tests drive it without waiting."""

    def __init__(
        self,
        models: Iterable[ServedModel],
        in_engine: Callable[[str], int],
        stall_s: float,
        now: float,
    ) -> None:
        self._models = list(models)
        self._in_engine = in_engine
        self.stall_s = stall_s
        self._progress = {m.id: _Progress(m.engine.generated_tokens, now) for m in self._models}
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
            tokens = model.engine.generated_tokens
            if starved and tokens == progress.tokens and model.id not in stalled:
                progress.since = now
                continue
            if tokens != progress.tokens:
                progress.tokens, progress.since = tokens, now
                if model.id in stalled:
                    stalled.discard(model.id)
                    log.warning("engine of %s generates again: serving it", model.id)
            elif model.id in stalled:
                continue  # until it generates: a hung engine whose requests left is still hung
            elif not self._in_engine(model.id):
                progress.since = now  # idle: nothing to judge it by
            elif now - progress.since >= self.stall_s:
                stalled.add(model.id)
                log.error(
                    "engine of %s has generated no token for %.0f s with %d request(s) in it: "
                    "reporting NOT_SERVING and refusing its new requests until it generates",
                    model.id,
                    now - progress.since,
                    self._in_engine(model.id),
                )
        changed = stalled != self.stalled
        self.stalled = frozenset(stalled)
        return changed
