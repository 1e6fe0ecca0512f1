"""KVBatch: left-padded batched decoding gives each row exactly what it would get alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicLayer

from inference.engines.torch.batch import KVBatch
from inference.engines.torch.loader import load_model
from tests.unit.engines.torch_engine.helpers import greedy_without_cache


@pytest.fixture(scope="module")
def model(tiny_llama_dir: Path) -> Iterator[PreTrainedModel]:
    with torch.inference_mode():
        yield load_model(tiny_llama_dir)


def test_rows_joining_and_leaving_decode_as_if_alone(model: PreTrainedModel) -> None:
    prompts = {
        "a": [5, 6, 7],
        "b": [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50],  # joins later, wider than a
        "c": [90] * 2 + list(range(100, 127)),  # joins last, widest, leaves first
        "d": [200],
    }
    steps = {"a": 9, "b": 12, "c": 3, "d": 14}
    join_at = {"a": 0, "d": 0, "b": 3, "c": 6}
    expected = {k: greedy_without_cache(model, p, steps[k]) for k, p in prompts.items()}

    batch = KVBatch()
    names: list[str] = []
    got: dict[str, list[int]] = {k: [] for k in prompts}
    widths: list[int] = []
    with torch.inference_mode():
        for step in range(20):
            if names:
                tokens = torch.tensor([got[k][-1] for k in names])
                for k, t in zip(
                    names, batch.decode(model, tokens).argmax(-1).tolist(), strict=True
                ):
                    got[k].append(t)
            joining = [k for k, s in join_at.items() if s == step]
            if joining:
                new, logits = KVBatch.prefill(model, [prompts[k] for k in joining])
                for k, t in zip(joining, logits.argmax(-1).tolist(), strict=True):
                    got[k].append(t)
                batch.extend(new)
                names += joining
            keep = [i for i, k in enumerate(names) if len(got[k]) < steps[k]]
            if len(keep) < len(names):
                batch.select(keep)
                names = [names[i] for i in keep]
            if names:
                # No column is padding in every row: what the widest row left behind is gone.
                assert batch.width == int(batch.mask.sum(-1).max())
                widths.append(batch.width)
            elif step > max(join_at.values()):
                break
    assert got == expected
    assert max(widths) > widths[-1]


def test_trim_keeps_exactly_the_columns_still_needed(model: PreTrainedModel) -> None:
    with torch.inference_mode():
        batch, _ = KVBatch.prefill(model, [[1, 2, 3], list(range(10, 30))])
        batch.decode(model, torch.tensor([4, 5]))
        assert batch.width == 21
        batch.select([0])  # the long row leaves
        assert batch.width == 4  # 3 prompt tokens + 1 decoded, no padding left
        assert bool(batch.mask.all())
        assert batch.positions.tolist() == [4]


def test_select_repeats_a_prefill_for_n_choices(model: PreTrainedModel) -> None:
    prompt = [9, 8, 7, 6]
    with torch.inference_mode():
        batch, logits = KVBatch.prefill(model, [prompt])
        batch.select([0, 0, 0])
        first = int(logits[0].argmax())
        out = batch.decode(model, torch.tensor([first] * 3))
    assert batch.size == 3
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert int(out[0].argmax()) == greedy_without_cache(model, prompt, 2)[1]


def test_padded_columns_hold_zeros_not_garbage(model: PreTrainedModel) -> None:
    with torch.inference_mode():
        batch, _ = KVBatch.prefill(model, [[1], [1, 2, 3, 4, 5]])
    assert batch.cache is not None
    for layer in batch.cache.layers:
        assert isinstance(layer, DynamicLayer)  # full-attention layers: what KVBatch supports
        assert layer.keys is not None and layer.values is not None
        assert torch.count_nonzero(layer.keys[0, :, :4]) == 0
        assert torch.count_nonzero(layer.values[0, :, :4]) == 0
        assert torch.isfinite(layer.keys).all()


def test_emptying_the_batch_releases_the_cache(model: PreTrainedModel) -> None:
    with torch.inference_mode():
        batch, _ = KVBatch.prefill(model, [[1, 2]])
        batch.select([])
    assert batch.size == 0 and batch.cache is None


def test_long_decodes_outgrow_the_spare_room_exactly(model: PreTrainedModel) -> None:
    # 150 steps pass the first buffer's room (64 columns past the prompt) more than once,
    # and the wide row leaving half-way rebuilds the batch from a trimmed view.
    short, wide = [3, 4], list(range(10, 90))
    expected = greedy_without_cache(model, short, 150)
    with torch.inference_mode():
        batch, logits = KVBatch.prefill(model, [short, wide])
        tokens = logits.argmax(-1)
        got = [int(tokens[0])]
        for step in range(149):
            if step == 70:
                batch.select([0])
                tokens = tokens[:1]
            tokens = batch.decode(model, tokens).argmax(-1)
            got.append(int(tokens[0]))
    assert got == expected
    assert batch.width == len(short) + 149
