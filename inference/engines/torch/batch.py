"""The running batch's KV cache: left-padded rows that prefill, decode, join and leave together.

Layout: every row's newest token sits in the last column of the cache, shorter rows are
padded on the left. The 2-D attention mask marks the real columns and each row carries its
own position ids, so a row's attention and rotary positions are exactly those it would have
alone; padding only costs compute. Keeping rows right-aligned also keeps "distance in
columns" equal to "distance in tokens", which sliding-window masks rely on.

transformers 5.x `DynamicCache` keeps one `DynamicLayer` per decoder layer with `keys` and
`values` tensors shaped [batch, kv_heads, seq, head_dim] and grows them by concatenation in
`update`; rows are added, removed and trimmed here by replacing those tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel

_PAD_ID = 0  # any valid id: padded columns are masked out and their K/V zeroed


class KVBatch:
    """KV cache, attention mask and next positions of the sequences decoding together."""

    def __init__(
        self,
        cache: DynamicCache | None = None,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> None:
        self.cache = cache
        self.mask: torch.Tensor
        self.positions: torch.Tensor
        self._set(cache, mask, positions)

    def _set(
        self,
        cache: DynamicCache | None,
        mask: torch.Tensor | None,
        positions: torch.Tensor | None,
    ) -> None:
        self.cache = cache
        # [B, L] bool: True where a column holds a real token of that row.
        self.mask = mask if mask is not None else torch.zeros(0, 0, dtype=torch.bool)
        # [B] long: position id of each row's next input token (= its number of cached tokens).
        self.positions = positions if positions is not None else torch.zeros(0, dtype=torch.long)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        """Columns in the cache, padding included."""
        return int(self.mask.shape[1])

    @classmethod
    def prefill(
        cls, model: PreTrainedModel, prompts: Sequence[Sequence[int]]
    ) -> tuple[KVBatch, torch.Tensor]:
        """Run the prompts left-padded as one batch; return that batch and last logits [B, V]."""
        device = model.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), _PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = True
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        batch = cls(cache, mask, mask.sum(-1))
        if not bool(mask.all()):
            batch._zero_padding()
        return batch, out.logits[:, -1, :]

    def decode(self, model: PreTrainedModel, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([B] long); return the next-token logits [B, V]."""
        if self.cache is None or self.size == 0:
            raise RuntimeError("decode on an empty batch")
        mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        out = model(
            input_ids=tokens.to(self.mask.device)[:, None],
            attention_mask=mask,
            position_ids=self.positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.mask = mask
        self.positions = self.positions + 1
        return out.logits[:, -1, :]

    def select(self, rows: Sequence[int]) -> None:
        """Keep these rows in this order (a row may repeat: n choices sharing one prefill)."""
        if len(rows) == 0:
            self._set(None, None, None)  # drop the cache's memory, not just its rows
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        for layer in self._layers():
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.trim()

    def extend(self, other: KVBatch) -> None:
        """Append `other`'s rows after ours, left-padding whichever cache is narrower."""
        if other.size == 0:
            return
        if self.size == 0:
            self._set(other.cache, other.mask, other.positions)
            return
        width = max(self.width, other.width)
        mine, theirs = width - self.width, width - other.width
        self.mask = torch.cat([F.pad(self.mask, (mine, 0)), F.pad(other.mask, (theirs, 0))])
        self.positions = torch.cat([self.positions, other.positions])
        for a, b in zip(self._layers(), other._layers(), strict=True):
            a.keys = torch.cat([_pad_seq(a.keys, mine), _pad_seq(b.keys, theirs)])
            a.values = torch.cat([_pad_seq(a.values, mine), _pad_seq(b.values, theirs)])

    def trim(self) -> None:
        """Drop leading columns that are padding in every row (left behind by rows that left)."""
        if self.size == 0:
            return
        used = self.mask.any(dim=0)
        first = int(used.to(torch.int8).argmax()) if bool(used.any()) else self.width
        if first == 0:
            return
        self.mask = self.mask[:, first:]
        for layer in self._layers():
            layer.keys = layer.keys[:, :, first:, :]
            layer.values = layer.values[:, :, first:, :]

    def _layers(self) -> list:  # list of transformers cache layers with .keys/.values
        return list(self.cache.layers) if self.cache is not None else []

    def _zero_padding(self) -> None:
        # Padded query positions attend to nothing; whatever an attention kernel leaves in
        # their K/V (zeros, garbage, NaN) must not leak into later steps, where 0 * NaN = NaN.
        keep = self.mask[:, None, :, None]
        for layer in self._layers():
            layer.keys = torch.where(keep, layer.keys, 0.0)
            layer.values = torch.where(keep, layer.values, 0.0)


def _pad_seq(t: torch.Tensor, left: int) -> torch.Tensor:
    return F.pad(t, (0, 0, left, 0)) if left else t
