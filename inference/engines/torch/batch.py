"""The running batch's KV cache: left-padded rows that prefill, decode, join and leave together.

Layout: every row's newest token sits in the last column of the cache, shorter rows are
padded on the left. The 2-D attention mask marks the real columns and each row carries its
own position ids, so a row's attention and rotary positions are exactly those it would have
alone; padding only costs compute. Keeping rows right-aligned also keeps "distance in
columns" equal to "distance in tokens", which sliding-window masks rely on.

transformers 5.x `DynamicCache` holds one layer object per decoder layer whose `keys` and
`values` are [batch, kv_heads, seq, head_dim] tensors, and `DynamicLayer.update` grows them
with `torch.cat` every step. Here each layer is a `_GrowableLayer` that appends into spare
room instead; rows join, leave and are trimmed by rebuilding or re-slicing those layers.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

_PAD_ID = 0  # any valid id: padded columns are masked out and their K/V zeroed


# Model class -> the name of its forward()'s KV-cache argument.
_CACHE_ARGUMENTS: dict[type[Any], str] = {}


def cache_argument(model: PreTrainedModel) -> str:
    """The name of forward()'s KV-cache argument: `cache` in transformers 5.2x, which warns
    (a FutureWarning on the first request) when given the old `past_key_values`; older
    versions know only `past_key_values`."""
    name = _CACHE_ARGUMENTS.get(type(model))
    if name is None:
        parameters = inspect.signature(model.forward).parameters
        name = "cache" if "cache" in parameters else "past_key_values"
        _CACHE_ARGUMENTS[type(model)] = name
    return name


class _GrowableLayer(DynamicLayer):
    """A full-attention cache layer whose `keys`/`values` are views into a larger buffer.

    `DynamicLayer` re-allocates and copies the whole layer twice per step; with a batch of
    long sequences that copy costs as much as attention itself, and grows with every token.
    Appending into spare room makes a step's cache write proportional to the new tokens;
    the buffer doubles when it fills up.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._start = self._end = 0
        self._key_buf = self._value_buf = keys  # replaced right away
        self._reallocate(keys, values)

    def _reallocate(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        length = keys.shape[-2]
        room = max(64, length)
        self._key_buf = keys.new_empty((*keys.shape[:2], length + room, keys.shape[-1]))
        self._value_buf = values.new_empty((*values.shape[:2], length + room, values.shape[-1]))
        self._key_buf[:, :, :length] = keys
        self._value_buf[:, :, :length] = values
        self._start, self._end = 0, length
        self._expose()

    def _expose(self) -> None:
        self.keys = self._key_buf[:, :, self._start : self._end]
        self.values = self._value_buf[:, :, self._start : self._end]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        if self._end + n > self._key_buf.shape[-2]:
            assert self.keys is not None and self.values is not None
            self._reallocate(self.keys, self.values)
        self._key_buf[:, :, self._end : self._end + n] = key_states
        self._value_buf[:, :, self._end : self._end + n] = value_states
        self._end += n
        self._expose()
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def drop_front(self, columns: int) -> None:
        """Forget the first `columns` columns without copying."""
        self._start += columns
        self._expose()


class KVBatch:
    """KV cache, attention mask and next positions of the sequences decoding together."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.cache: DynamicCache | None = None
        self._layers: list[_GrowableLayer] = []
        # [B, L] bool: True where a column holds a real token of that row.
        self.mask = torch.zeros(0, 0, dtype=torch.bool)
        # [B] long: position id of each row's next input token (= its number of cached tokens).
        self.positions = torch.zeros(0, dtype=torch.long)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        """Columns in the cache, padding included."""
        return int(self.mask.shape[1])

    @classmethod
    def prefill(
        cls, model: PreTrainedModel, prompts: Sequence[Sequence[int]], *, all_logits: bool = False
    ) -> tuple[KVBatch, torch.Tensor]:
        """Run the prompts left-padded as one batch; return that batch and the last logits
        [B, V], or with `all_logits` every position's [B, width, V] (prompt scoring)."""
        device = model.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), _PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = True
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        scratch = DynamicCache()
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            **{cache_argument(model): scratch},
            use_cache=True,
            logits_to_keep=0 if all_logits else 1,
        )
        # Padded query positions attend to nothing; whatever a kernel leaves in their K/V
        # (zeros, garbage, NaN) must not leak into later steps, where 0 * NaN = NaN.
        keep = mask[:, None, :, None]
        layers = []
        for layer in scratch.layers:
            if not isinstance(layer, DynamicLayer) or getattr(layer, "is_sliding", False):
                raise NotImplementedError(
                    f"the torch engine batches full-attention KV caches only, not {type(layer)}"
                )
            assert layer.keys is not None and layer.values is not None
            layers.append(
                _GrowableLayer(
                    torch.where(keep, layer.keys, 0.0), torch.where(keep, layer.values, 0.0)
                )
            )
        batch = cls()
        batch._set(layers, mask, mask.sum(-1))
        return batch, out.logits if all_logits else out.logits[:, -1, :]

    def decode(self, model: PreTrainedModel, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([B] long); return the next-token logits [B, V]."""
        if self.cache is None or self.size == 0:
            raise RuntimeError("decode on an empty batch")
        mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        out = model(
            input_ids=tokens.to(self.mask.device)[:, None],
            attention_mask=mask,
            position_ids=self.positions[:, None],
            **{cache_argument(model): self.cache},
            use_cache=True,
        )
        self.mask = mask
        self.positions = self.positions + 1
        return out.logits[:, -1, :]

    def select(self, rows: Sequence[int]) -> None:
        """Keep these rows in this order (a row may repeat: n choices sharing one prefill)."""
        if len(rows) == 0:
            self._clear()  # drops the cache's memory, not just its rows
            return
        self.trim()  # fewer columns to copy
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self._set(
            [
                _GrowableLayer(*_kv(layer, lambda t: t.index_select(0, index)))
                for layer in self._layers
            ],
            self.mask.index_select(0, index),
            self.positions.index_select(0, index),
        )
        self.trim()

    def extend(self, other: KVBatch) -> None:
        """Append `other`'s rows after ours, left-padding whichever cache is narrower."""
        if other.size == 0:
            return
        if self.size == 0:
            self._set(other._layers, other.mask, other.positions)
            return
        width = max(self.width, other.width)
        mine, theirs = width - self.width, width - other.width
        layers = [
            _GrowableLayer(
                torch.cat([_pad_seq(a.keys, mine), _pad_seq(b.keys, theirs)]),
                torch.cat([_pad_seq(a.values, mine), _pad_seq(b.values, theirs)]),
            )
            for a, b in zip(self._layers, other._layers, strict=True)
        ]
        self._set(
            layers,
            torch.cat([F.pad(self.mask, (mine, 0)), F.pad(other.mask, (theirs, 0))]),
            torch.cat([self.positions, other.positions]),
        )

    def trim(self) -> None:
        """Drop leading columns that are padding in every row (left behind by rows that left)."""
        if self.size == 0:
            return
        used = self.mask.any(dim=0)
        first = int(used.to(torch.int8).argmax()) if bool(used.any()) else self.width
        if first == 0:
            return
        self.mask = self.mask[:, first:]
        for layer in self._layers:
            layer.drop_front(first)

    def _set(
        self, layers: list[_GrowableLayer], mask: torch.Tensor, positions: torch.Tensor
    ) -> None:
        self._layers = layers
        cache = DynamicCache()
        cache.layers = list(layers)
        self.cache = cache
        self.mask = mask
        self.positions = positions


def _kv(layer: _GrowableLayer, fn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    assert layer.keys is not None and layer.values is not None
    return fn(layer.keys), fn(layer.values)


def _pad_seq(t: torch.Tensor | None, left: int) -> torch.Tensor:
    assert t is not None
    return F.pad(t, (0, 0, left, 0)) if left else t
