#!/usr/bin/env python3
"""What encoding one chat request costs: CPU µs per `SafeChatEncoder.encode`, this tree vs another.

The request is facade_overhead.py's (one user message of `--prompt-words` words) in the
default model's template and tool format (SmolLM2's ChatML, the generic format). With
`--baseline DIR` (repeatable) another checkout's encoder module (its
inference/text/chat_encoding.py, rendering with its chat_template.py) is loaded beside this
tree's into the same process, and all encode the same conversations in alternating rounds, so
the comparison holds on a noisy machine; all must give the same ids.

Run from the repository root:
  .venv/bin/python benchmarks/chat_encoding.py --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stackbench.servers import default_checkpoint
from inference.text import ChatMessage, ModelTokenizer
from tensorchat.bench.workload import make_prompt


def tree_module(tree: Path, name: str) -> ModuleType:
    """Another checkout's inference/text/<name>.py, imported under a name of its own."""
    path = tree / "inference" / "text" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"baseline_{name}_{id(tree)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def encoder_module(tree: Path) -> ModuleType:
    """Another checkout's chat_encoding.py, rendering with that checkout's chat_template.py."""
    module = tree_module(tree, "chat_encoding")
    module.ChatTemplate = tree_module(tree, "chat_template").ChatTemplate
    return module


def time_per_call(encode: Callable[[Any], list[int]], inputs: Sequence[Any]) -> float:
    """CPU µs per call over `inputs` (CPU time: the machine may be shared)."""
    start = time.process_time()
    for conversation in inputs:
        encode(conversation)
    return (time.process_time() - start) / len(inputs) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", type=Path, action="append", default=[], help="another checkout (repeatable)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="conversations per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--prompt-words", type=int, default=16)
    args = parser.parse_args(argv)

    tokenizer = ModelTokenizer.from_pretrained(default_checkpoint())
    rng = random.Random(0)
    conversations = [
        tokenizer.tool_format.conversation(
            [ChatMessage("user", make_prompt(args.prompt_words, rng))], ()
        )
        for _ in range(args.requests)
    ]
    encoders: dict[str, Callable[[Any], list[int]]] = {
        "this tree": tokenizer._chat.encode,
    }
    for tree in args.baseline:
        encoders[str(tree)] = encoder_module(tree).SafeChatEncoder(tokenizer.hf).encode
    for name, encode in encoders.items():
        mismatches = sum(encode(c) != tokenizer._chat.encode(c) for c in conversations[:200])
        if mismatches:
            raise SystemExit(f"{name}: {mismatches} of 200 encodings differ from this tree's")
        time_per_call(encode, conversations)  # warm: caches, lazy paths
    figures: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        for name, encode in encoders.items():
            figures[name].append(time_per_call(encode, conversations))
    for name, values in figures.items():
        print(
            f"{name:>24}: {statistics.median(values):6.1f} CPU µs per encode "
            f"(median of {args.rounds} rounds of {args.requests}; "
            f"min {min(values):.1f}, max {max(values):.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
