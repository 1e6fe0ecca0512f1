"""Sampler: every sampling parameter has its effect, logprobs are right, seeds ignore the batch."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch

from inference.engines.torch.sampler import RowSampler, Sampler
from inference.sampling import SamplingParams

V = 16
EOS = 2


def make_logits(rows: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, V, generator=g) * 2.0


def row(
    sampler: Sampler,
    *,
    index: int = 0,
    prompt: list[int] | None = None,
    eos: frozenset[int] = frozenset({EOS}),
    **params: object,
) -> RowSampler:
    params.setdefault("max_tokens", 16)
    p = SamplingParams(**params)  # type: ignore[arg-type]
    mask = sampler.prompt_mask(prompt or [0])
    return sampler.new_row(p, index=index, prompt_mask=mask, eos_token_ids=eos)


def draw(sampler: Sampler, logits: torch.Tensor, r: RowSampler, times: int) -> Counter[int]:
    return Counter(sampler.sample(logits, [r])[0].token_id for _ in range(times))


def test_greedy_is_argmax_per_row() -> None:
    s = Sampler(V)
    logits = make_logits(4)
    rows = [row(s, temperature=0.0) for _ in range(4)]
    got = [t.token_id for t in s.sample(logits, rows)]
    assert got == logits.argmax(-1).tolist()


def test_top_k_one_is_greedy_even_with_temperature() -> None:
    s = Sampler(V)
    logits = make_logits(3, seed=1)
    rows = [row(s, temperature=1.5, top_k=1, seed=i) for i in range(3)]
    for _ in range(5):
        assert [t.token_id for t in s.sample(logits, rows)] == logits.argmax(-1).tolist()


def test_logit_bias_forces_a_token_and_stacks_per_row() -> None:
    s = Sampler(V)
    logits = make_logits(2)
    weakest = int(logits[0].argmin())
    rows = [row(s, temperature=0.0, logit_bias={weakest: 100.0}), row(s, temperature=0.0)]
    got = [t.token_id for t in s.sample(logits, rows)]
    # Only the biased row moves; the other stays at its own argmax.
    assert got == [weakest, int(logits[1].argmax())]


def test_min_tokens_masks_eos_and_stop_ids_until_reached() -> None:
    s = Sampler(V)
    logits = torch.zeros(1, V)
    logits[0, EOS] = 50.0
    logits[0, 7] = 40.0
    logits[0, 9] = 30.0
    r = row(s, temperature=0.0, min_tokens=2, stop_token_ids=frozenset({7}))
    first = s.sample(logits, [r])[0].token_id
    second = s.sample(logits, [r])[0].token_id
    third = s.sample(logits, [r])[0].token_id
    assert (first, second) == (9, 9)  # EOS and the stop id are both masked
    assert third == EOS  # min_tokens reached: the mask is gone


def test_min_tokens_with_ignore_eos_leaves_eos_unmasked() -> None:
    s = Sampler(V)
    logits = torch.zeros(1, V)
    logits[0, EOS] = 50.0
    r = row(s, temperature=0.0, min_tokens=3, ignore_eos=True)
    assert s.sample(logits, [r])[0].token_id == EOS


def test_top_k_limits_the_support() -> None:
    s = Sampler(V)
    logits = make_logits(seed=2)
    allowed = set(logits[0].topk(3).indices.tolist())
    seen = draw(s, logits, row(s, temperature=5.0, top_k=3, seed=1), 300)
    assert set(seen) <= allowed
    assert len(seen) == 3  # a hot temperature reaches all three


def test_top_p_keeps_the_smallest_nucleus() -> None:
    s = Sampler(V)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05] + [0.0] * (V - 4))
    logits = torch.log(probs.clamp_min(1e-12))[None, :]
    # Mass before token 2 is 0.8 >= 0.75: the nucleus is {0, 1}.
    seen = draw(s, logits, row(s, top_p=0.75, seed=3), 400)
    assert set(seen) == {0, 1}
    # Renormalised inside the nucleus: 0.5 / 0.8 = 0.625 for token 0.
    assert seen[0] / 400 == pytest.approx(0.625, abs=0.08)


def test_min_p_drops_tokens_below_the_scaled_floor() -> None:
    s = Sampler(V)
    probs = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05] + [0.0] * (V - 5))
    logits = torch.log(probs.clamp_min(1e-12))[None, :]
    # Floor 0.3 * 0.4 = 0.12: tokens 0, 1 and 2 survive.
    seen = draw(s, logits, row(s, min_p=0.3, seed=4), 400)
    assert set(seen) == {0, 1, 2}


def test_temperature_sharpens_and_flattens() -> None:
    s = Sampler(V)
    logits = (torch.arange(V, dtype=torch.float32) * 0.3)[None, :]  # top gap 0.3
    best = V - 1
    cold = draw(s, logits, row(s, temperature=0.02, seed=5), 200)
    hot = draw(s, logits, row(s, temperature=10.0, seed=5), 200)
    assert cold[best] == 200
    assert hot[best] < 100 and len(hot) > 8


def processed(s: Sampler, logits: torch.Tensor, r: RowSampler) -> torch.Tensor:
    """The distribution a greedy row was chosen from (processed logprobs, all tokens)."""
    out = s.sample(logits, [r])[0]
    assert out.logprob is not None
    return torch.tensor([lp for _, lp in sorted(out.logprob.top)])


def test_repetition_penalty_covers_prompt_and_output_from_both_signs() -> None:
    s = Sampler(V, processed_logprobs=True)
    logits = torch.zeros(1, V)
    logits[0, 3] = 2.0
    logits[0, 4] = -2.0
    logits[0, 5] = 6.0  # the greedy pick
    r = row(
        s, temperature=0.0, repetition_penalty=2.0, prompt=[3, 4], logprobs=True, top_logprobs=V
    )
    lp = processed(s, logits, r)
    expected = logits[0].clone()
    expected[3], expected[4] = 1.0, -4.0  # positive halved, negative doubled
    assert torch.allclose(lp, torch.log_softmax(expected, -1), atol=1e-5)
    # Token 5 was generated: the penalty now applies to it as well.
    lp2 = processed(s, logits, r)
    expected[5] = 3.0
    assert torch.allclose(lp2, torch.log_softmax(expected, -1), atol=1e-5)


def test_presence_and_frequency_penalties_use_output_counts_only() -> None:
    s = Sampler(V, processed_logprobs=True)
    logits = torch.zeros(1, V)
    logits[0, 6] = 5.0
    r = row(
        s,
        temperature=0.0,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        prompt=[7],
        logprobs=True,
        top_logprobs=V,
    )
    for _ in range(3):  # greedy keeps picking 6 while its logit stays the largest
        assert s.sample(logits, [r])[0].token_id == 6
    lp = processed(s, logits, r)
    expected = logits[0].clone()
    expected[6] -= (
        0.5 + 0.25 * 3
    )  # presence once, frequency per occurrence; prompt token 7 untouched
    assert torch.allclose(lp, torch.log_softmax(expected, -1), atol=1e-5)


def test_penalties_change_the_sampled_distribution() -> None:
    s = Sampler(V)
    logits = make_logits(seed=6)
    plain = row(s, temperature=0.0)
    penal = row(s, temperature=0.0, frequency_penalty=2.0)
    a = [s.sample(logits, [plain])[0].token_id for _ in range(6)]
    b = [s.sample(logits, [penal])[0].token_id for _ in range(6)]
    assert len(set(a)) == 1  # the same argmax every time
    assert len(set(b)) > 1  # repeated tokens get pushed down


def test_raw_logprobs_and_top_logprobs() -> None:
    s = Sampler(V)
    logits = make_logits(2, seed=7)
    rows = [
        row(s, temperature=0.0, logprobs=True, top_logprobs=3),
        row(s, temperature=2.0, seed=1, logprobs=True, top_logprobs=5, logit_bias={0: 5.0}),
    ]
    out = s.sample(logits, rows)
    ref = torch.log_softmax(logits, -1)
    for i, tok in enumerate(out):
        assert tok.logprob is not None
        assert tok.logprob.token_id == tok.token_id
        # Raw mode: the model's own distribution, before bias and temperature.
        assert tok.logprob.logprob == pytest.approx(float(ref[i, tok.token_id]), abs=1e-5)
        k = rows[i].params.top_logprobs
        assert len(tok.logprob.top) == k
        top_vals = [lp for _, lp in tok.logprob.top]
        assert top_vals == sorted(top_vals, reverse=True)
        assert [t for t, _ in tok.logprob.top] == ref[i].topk(k).indices.tolist()
    greedy = out[0].logprob
    assert greedy is not None and greedy.top[0] == (greedy.token_id, greedy.logprob)


@pytest.mark.parametrize("processed", [False, True])
def test_chosen_logprob_equals_its_top_entry(processed: bool) -> None:
    # Whatever bias, penalty and temperature do, the chosen token's value and the top list come
    # from one distribution (the trtllm adapter keeps the same rule, see its results.py).
    s = Sampler(V, processed_logprobs=processed)
    params: dict[str, Any] = dict(
        logprobs=True, top_logprobs=V, presence_penalty=0.7, logit_bias={3: 1.5}
    )
    rows = [row(s, temperature=0.0, **params), row(s, temperature=1.7, seed=5, **params)]
    logits = make_logits(2, seed=11)
    for _ in range(4):
        for tok in s.sample(logits, rows):
            assert tok.logprob is not None
            assert dict(tok.logprob.top)[tok.token_id] == tok.logprob.logprob


def test_processed_logprobs_follow_temperature() -> None:
    s = Sampler(V, processed_logprobs=True)
    logits = make_logits(seed=8)
    out = s.sample(logits, [row(s, temperature=0.5, seed=2, logprobs=True)])[0]
    assert out.logprob is not None
    expected = torch.log_softmax(logits[0] / 0.5, -1)[out.token_id]
    assert out.logprob.logprob == pytest.approx(float(expected), abs=1e-5)


def test_no_logprobs_unless_asked() -> None:
    s = Sampler(V)
    out = s.sample(make_logits(), [row(s, temperature=0.0)])
    assert out[0].logprob is None


def test_same_seed_same_tokens_whatever_else_is_in_the_batch() -> None:
    s = Sampler(V)
    logits = make_logits(1, seed=9)
    alone = row(s, temperature=1.0, seed=42)
    solo = [s.sample(logits, [alone])[0].token_id for _ in range(30)]

    busy_row = row(s, temperature=1.0, seed=42)
    batched: list[int] = []
    for step in range(30):
        # Neighbours change every step: unseeded, seeded, greedy, and a varying count.
        neighbours = [row(s, temperature=1.0) for _ in range(step % 4)]
        neighbours.append(row(s, temperature=0.7, seed=step))
        rows = [*neighbours[: step % 2], busy_row, *neighbours[step % 2 :]]
        pos = rows.index(busy_row)
        others = make_logits(len(rows), seed=100 + step)
        others[pos] = logits[0]
        batched.append(s.sample(others, rows)[pos].token_id)
    assert batched == solo
    assert len(set(solo)) > 3  # it really sampled


def test_choices_of_one_seeded_request_differ() -> None:
    s = Sampler(V)
    logits = make_logits(1, seed=10).expand(3, V)
    rows = [row(s, index=i, temperature=1.0, seed=7) for i in range(3)]
    seqs = list(
        zip(*[[t.token_id for t in s.sample(logits, rows)] for _ in range(20)], strict=True)
    )
    assert len(set(seqs)) == 3


def test_seed_near_u64_max_wraps() -> None:
    s = Sampler(V)
    r = row(s, index=3, temperature=1.0, seed=(1 << 64) - 2)
    assert 0 <= s.sample(make_logits(), [r])[0].token_id < V


def test_padded_model_vocab_is_never_sampled() -> None:
    s = Sampler(V)
    wide = torch.full((1, V + 8), -10.0)
    wide[0, V + 3] = 100.0  # an embedding row past the tokenizer's vocabulary
    out = s.sample(wide, [row(s, temperature=0.0, logprobs=True)])[0]
    assert out.token_id < V
    assert out.logprob is not None and not math.isnan(out.logprob.logprob)
