"""One way to build an engine-level EngineRequest in tests (each engine suite wraps it
with its own defaults: the prompt, the EOS ids of its model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference.engines.base import EngineRequest
from inference.sampling import SamplingParams


def engine_request(
    prompt: Sequence[int],
    *,
    request_id: str,
    eos: frozenset[int] = frozenset(),
    deadline: float | None = None,
    **params: Any,
) -> EngineRequest:
    """`params` are SamplingParams fields; max_tokens defaults to 8 to keep tests short."""
    params.setdefault("max_tokens", 8)
    return EngineRequest(
        request_id=request_id,
        prompt_token_ids=list(prompt),
        params=SamplingParams(**params),
        eos_token_ids=eos,
        deadline=deadline,
    )
