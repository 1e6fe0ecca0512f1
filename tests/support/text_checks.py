"""Drivers and reference answers the text-layer tests share."""

from __future__ import annotations

from inference.text import ModelTokenizer, StopMatcher


def run(stops: list[str], chunks: list[str]) -> tuple[str, str | None]:
    """Feeds the chunks and returns (all emitted text, matched stop)."""
    matcher = StopMatcher(stops)
    out = []
    for chunk in chunks:
        text, stop = matcher.push(chunk)
        out.append(text)
        if stop is not None:
            return "".join(out), stop
    out.append(matcher.flush())
    return "".join(out), None


def reference(stops: list[str], text: str) -> tuple[str, str | None]:
    """Character by character: the first position where some stop ends, earliest start."""
    for end in range(1, len(text) + 1):
        for start in range(end):
            if text[start:end] in stops:
                return text[:start], text[start:end]
    return text, None


def stream(tok: ModelTokenizer, ids: list[int], chunk_sizes: list[int] | None = None) -> list[str]:
    """Pushes ids in chunks (one by one by default) and returns every delta plus the flush."""
    detok = tok.new_detokenizer()
    deltas = []
    i = 0
    sizes = iter(chunk_sizes or [])
    while i < len(ids):
        n = max(1, next(sizes, 1))
        deltas.append(detok.push(ids[i : i + n]))
        i += n
    deltas.append(detok.flush())
    return deltas


def full_decode(tok: ModelTokenizer, ids: list[int]) -> str:
    text = tok.hf.decode(ids, skip_special_tokens=True)
    assert isinstance(text, str)
    return text


def plain_ids(tok: ModelTokenizer, text: str) -> list[int]:
    return tok.hf.backend_tokenizer.encode(text, add_special_tokens=False).ids
