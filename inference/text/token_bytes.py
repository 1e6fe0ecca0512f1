"""The raw bytes behind each token id, for logprobs (byte-level BPE and byte-fallback aware)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tokenizers import Tokenizer

_BYTE_FALLBACK_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte, inverted: char -> byte.

    Byte-level BPE vocabularies store bytes that are not printable (control characters,
    space, 0x7F-0xA0, 0xAD) as the code points 256, 257, ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    kept = set(printable)
    alphabet = {chr(b): b for b in printable}
    extra = 256
    for b in range(256):
        if b not in kept:
            alphabet[chr(extra)] = b
            extra += 1
    return alphabet


_BYTE_LEVEL = _byte_level_alphabet()


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a decoder description (Sequence decoders nest)."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


class TokenBytes:
    """Maps token ids to the bytes they stand for, read off the tokenizer's decoder."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._added = {i: t.content for i, t in tokenizer.get_added_tokens_decoder().items()}
        # The decoder's JSON description (pickle state), as tokenizer.json holds it.
        decoder = (
            None if tokenizer.decoder is None else json.loads(tokenizer.decoder.__getstate__())
        )
        types = {node.get("type") for node in _nodes(decoder)}
        self._byte_level = "ByteLevel" in types
        self._byte_fallback = "ByteFallback" in types
        # SentencePiece-style vocabularies spell a space as a metasymbol ("▁").
        self._space_symbol: str | None = None
        for node in _nodes(decoder):
            if node.get("type") == "Metaspace":
                self._space_symbol = node.get("replacement", "\u2581")
            elif node.get("type") == "Replace" and node.get("content") == " ":
                self._space_symbol = node.get("pattern", {}).get("String")

    def __call__(self, token_id: int) -> bytes:
        """The token's bytes; b"" for an id the tokenizer does not have (padded vocab rows)."""
        added = self._added.get(token_id)
        if added is not None:
            return added.encode()
        piece = self._tokenizer.id_to_token(token_id)
        if piece is None:
            return b""
        if self._byte_level:
            out = bytearray()
            for ch in piece:
                b = _BYTE_LEVEL.get(ch)
                if b is None:
                    out += ch.encode()  # not from the byte alphabet: keep the text as is
                else:
                    out.append(b)
            return bytes(out)
        if self._byte_fallback:
            m = _BYTE_FALLBACK_PIECE.fullmatch(piece)
            if m:
                return bytes([int(m.group(1), 16)])
        if self._space_symbol:
            piece = piece.replace(self._space_symbol, " ")
        return piece.encode()
