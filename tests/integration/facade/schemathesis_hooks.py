"""Schemathesis hooks for the facade run (loaded through SCHEMATHESIS_HOOKS).

Generated model names are random strings, which the facade answers with a 404 before any
generation; most generated bodies are pointed at the served model instead, so that the run
reaches the inference service, its completions and its streams.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

SERVED_MODEL = os.environ.get("TENSORCHAT_FUZZ_MODEL", "synthetic")


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    # Deterministic in the generated data (hypothesis replays it): 3 bodies in 4.
    if isinstance(body, dict) and isinstance(body.get("model"), str) and len(body["model"]) % 4:
        body["model"] = SERVED_MODEL
    return body
