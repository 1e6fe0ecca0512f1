"""Incremental detokenization: generated token ids in, final text deltas out."""

from __future__ import annotations

import json
from collections.abc import Sequence

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


def byte_fallback_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Ids of the <0xXX> byte pieces, if the tokenizer's decoder groups them (ByteFallback)."""
    decoder = tokenizer.decoder
    if decoder is None or '"ByteFallback"' not in json.dumps(json.loads(decoder.__getstate__())):
        return frozenset()
    ids = (tokenizer.token_to_id(f"<0x{b:02X}>") for b in range(256))
    return frozenset(i for i in ids if i is not None)


class IncrementalDetokenizer:
    """Turns a stream of token ids into text without ever splitting a character.

    Invariant: the concatenation of every `push()` result and the final `flush()` equals
    `tokenizer.decode(all_ids, skip_special_tokens=True)`, for any ids (valid UTF-8 or not).

    The work is done by `tokenizers.decoders.DecodeStream` (one Rust call per push, over a
    window of a few tokens), which holds text back while the decoded window ends in U+FFFD
    (an unfinished UTF-8 sequence). Two things it cannot do are written here:
    - Release what it still holds when the sequence ends (a truncated character, or a model
      that really ended on U+FFFD): `flush()` decodes the held ids after the ids of the last
      emitted delta, which gives the decoder the same context the full decode has.
    - Byte-fallback runs. The ByteFallback decoder turns a whole run of <0xXX> pieces into
      U+FFFD per byte if any byte in the run is invalid, so a later byte can change the
      text of earlier ones ("ā" then a stray byte decodes as three U+FFFD). A run is
      therefore held until a regular token ends it: one token of latency for characters the
      vocabulary spells in bytes (emoji, rare CJK), and exact text always.
    """

    __slots__ = (
        "_byte_ids",
        "_context",
        "_held",
        "_known_ids",
        "_run",
        "_special_ids",
        "_stream",
        "_tokenizer",
    )

    def __init__(
        self,
        tokenizer: Tokenizer,
        byte_ids: frozenset[int] = frozenset(),
        special_ids: frozenset[int] = frozenset(),
        context: Sequence[int] = (),
    ) -> None:
        """`byte_ids`: see byte_fallback_ids(); `special_ids`: ids decode skips; `context`: the
        ids the sequence continues (a raw prompt's last few), so that its first token decodes
        as it does after them: SentencePiece drops a leading space only at the start of text.
        """
        self._tokenizer = tokenizer
        self._byte_ids = byte_ids
        self._special_ids = special_ids
        # Ids past the vocabulary (padded embedding rows) decode to nothing, like specials.
        self._known_ids = tokenizer.get_vocab_size(with_added_tokens=True) if byte_ids else 0
        self._stream = DecodeStream(ids=list(context), skip_special_tokens=True)
        self._run: list[int] = []  # an unfinished byte-fallback run, not yet given to the stream
        self._held: list[int] = []  # ids given to the stream since its last non-empty delta
        self._context: list[int] = list(context)  # ids of the stream's last non-empty delta

    def push(self, token_ids: Sequence[int]) -> str:
        """New final text; never ends inside a multi-byte character; special tokens skipped."""
        if not self._byte_ids:
            return self._step(list(token_ids))
        ids = self._run + list(token_ids) if self._run else list(token_ids)
        cut = self._open_run_start(ids)
        self._run = ids[cut:]
        return self._step(ids[:cut])

    def flush(self) -> str:
        """Whatever is still held back, at the end of the sequence."""
        text = self._step(self._run)
        self._run = []
        if not self._held:
            return text
        held, self._held = self._held, []
        before = self._tokenizer.decode(self._context, skip_special_tokens=True)
        after = self._tokenizer.decode(self._context + held, skip_special_tokens=True)
        return text + after[len(before) :]

    def _step(self, ids: list[int]) -> str:
        if not ids:
            return ""
        text = self._stream.step(self._tokenizer, ids)
        if text is None:
            self._held.extend(ids)
            return ""
        self._context = self._held + ids if self._held else ids
        self._held = []
        return text

    def _open_run_start(self, ids: list[int]) -> int:
        """Index where a byte run still open at the end of `ids` starts (len(ids) if none).

        Special and unknown ids do not end a run: decode drops them before grouping bytes.
        """
        start = len(ids)
        for i in range(len(ids) - 1, -1, -1):
            token = ids[i]
            if token in self._byte_ids:
                start = i
            elif token < self._known_ids and token not in self._special_ids:
                break
        return start
