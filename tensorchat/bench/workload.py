"""What to send: prompt and output lengths from distributions or a JSONL dataset, seeded.

Prompts are built from common English words that most BPE tokenizers (Llama/Mistral
SentencePiece, Qwen/GPT byte-level BPE) encode as one token each with their leading
space, so "N prompt tokens" is close to N without loading a tokenizer in the client. The
server's usage report gives the exact count; the summary uses that.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Frequent words that are single tokens with a leading space in Llama, Mistral and Qwen
# vocabularies; repeating them keeps prompts cheap to build and close to N tokens.
_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were one all we can her has there been if more when will "
    "would who so no time out up about into than them only other new some could these two "
    "may first then do any like my now over such our man me even most made after also did "
    "many before must through back years where much your way well down should because each "
    "just those people how too little state good very make world still own see men work long"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A token-length distribution: fixed N, `uniform:LOW:HIGH` or `normal:MEAN:STDDEV`."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> LengthDist:
        parts = spec.strip().split(":")
        try:
            if len(parts) == 1:
                dist = cls("fixed", float(int(parts[0])))
            elif parts[0] == "uniform" and len(parts) == 3:
                dist = cls("uniform", float(int(parts[1])), float(int(parts[2])))
                if dist.b < dist.a:
                    raise ValueError("HIGH < LOW")
            elif parts[0] == "normal" and len(parts) == 3:
                dist = cls("normal", float(parts[1]), float(parts[2]))
                if dist.b < 0:
                    raise ValueError("negative standard deviation")
            else:
                raise ValueError("unknown form")
        except ValueError as exc:
            raise ValueError(
                f"bad length {spec!r} ({exc}): use N, uniform:LOW:HIGH or normal:MEAN:STDDEV"
            ) from None
        if dist.a < 1 and dist.kind != "normal":
            raise ValueError(f"bad length {spec!r}: lengths must be >= 1")
        return dist

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        if self.kind == "uniform":
            return f"uniform:{int(self.a)}:{int(self.b)}"
        return f"normal:{self.a:g}:{self.b:g}"

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, round(rng.gauss(self.a, self.b)))


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send: chat messages and the output length to ask for."""

    messages: tuple[tuple[str, str], ...]
    max_tokens: int

    def messages_json(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


def make_prompt(tokens: int, rng: random.Random) -> str:
    """About `tokens` tokens of words; a random start keeps prompts of one run distinct."""
    offset = rng.randrange(len(_WORDS))
    return " ".join(_WORDS[(offset + i) % len(_WORDS)] for i in range(max(1, tokens)))


def synthetic_requests(
    count: int, prompt: LengthDist, output: LengthDist, seed: int = 0
) -> list[RequestSpec]:
    rng = random.Random(seed)
    specs = []
    for _ in range(count):
        text = make_prompt(prompt.sample(rng), rng)
        specs.append(RequestSpec(messages=(("user", text),), max_tokens=output.sample(rng)))
    return specs


def load_dataset(path: Path, count: int, output: LengthDist, seed: int = 0) -> list[RequestSpec]:
    """Requests from a JSONL file, cycled to `count`.

    Each line is an object with `messages` (a chat, OpenAI-shaped) or `prompt` (one user
    message), and optionally `max_tokens` / `output_tokens`; without one the output length
    comes from the `output` distribution.
    """
    rng = random.Random(seed)
    rows: list[tuple[tuple[tuple[str, str], ...], int | None]] = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(_parse_row(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: no requests in the dataset")
    specs = []
    for i in range(count):
        messages, max_tokens = rows[i % len(rows)]
        specs.append(RequestSpec(messages, max_tokens or output.sample(rng)))
    return specs


def _parse_row(row: Any) -> tuple[tuple[tuple[str, str], ...], int | None]:
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in row:
        messages = tuple((str(m["role"]), str(m["content"])) for m in row["messages"])
        if not messages:
            raise ValueError("empty messages")
    elif "prompt" in row:
        messages = (("user", str(row["prompt"])),)
    else:
        raise ValueError("needs 'messages' or 'prompt'")
    raw = row.get("max_tokens", row.get("output_tokens"))
    max_tokens = None if raw is None else int(raw)
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    return messages, max_tokens
