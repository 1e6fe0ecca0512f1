"""Pure mapping rules of the adapter: eos/stop planning, generation_config.json, limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.engines.trtllm.config import (
    EngineBuildConfig,
    GenerationDefaults,
    clip_runtime_limits,
)
from inference.engines.trtllm.requests import plan_stops
from tests.fakes.trtllm_fixtures import write_fake_engine
from tests.unit.engines.trtllm_engine.helpers import request

QWEN = GenerationDefaults(eos_token_ids=(151645, 151643), pad_token_id=151643)


def test_qwen_eos_pair_gives_end_id_and_one_stop_word() -> None:
    plan = plan_stops(request([1], eos=frozenset({151643, 151645})), QWEN)
    # generation_config.json order decides: <|im_end|> ends, <|endoftext|> is a stop word.
    assert plan.end_id == 151645
    assert plan.stop_words == [[151643]]
    assert plan.eos_ids == {151643, 151645}
    assert plan.pad_id == 151643
    assert plan.deferred_stop_ids == frozenset()


def test_user_stop_ids_join_the_stop_words() -> None:
    plan = plan_stops(
        request([1], eos=frozenset({2}), stop_token_ids=frozenset({9, 5})),
        GenerationDefaults(eos_token_ids=(2,)),
    )
    assert (plan.end_id, plan.stop_words, plan.pad_id) == (2, [[5], [9]], 2)


def test_ignore_eos_keeps_user_stops_only() -> None:
    plan = plan_stops(
        request(
            [1], eos=frozenset({151643, 151645}), ignore_eos=True, stop_token_ids=frozenset({7})
        ),
        QWEN,
    )
    assert plan.end_id == -1
    assert plan.stop_words == [[7]]
    assert plan.eos_ids == frozenset()


def test_no_eos_known_disables_end_id_with_a_valid_pad() -> None:
    plan = plan_stops(request([1]), GenerationDefaults())
    assert (plan.end_id, plan.pad_id, plan.stop_words) == (-1, 0, [])


def test_min_tokens_moves_stop_ids_to_the_adapter() -> None:
    plan = plan_stops(request([1], eos=frozenset({151643, 151645}), min_tokens=4), QWEN)
    # end_id stays with the executor: its min_tokens masks exactly that id.
    assert plan.end_id == 151645
    assert plan.stop_words == []
    assert plan.deferred_stop_ids == {151643}


def test_request_eos_missing_from_generation_config_is_ordered_after_it() -> None:
    defaults = GenerationDefaults(eos_token_ids=(2,))
    assert defaults.order(frozenset({40, 2, 30})) == [2, 30, 40]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"eos_token_id": 2}, GenerationDefaults((2,), None)),
        (
            {"eos_token_id": [151645, 151643], "pad_token_id": 151643},
            GenerationDefaults((151645, 151643), 151643),
        ),
        ({}, GenerationDefaults((), None)),
    ],
)
def test_generation_config_is_read(tmp_path: Path, content: dict, expected: object) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps(content))
    assert GenerationDefaults.read(tmp_path) == expected


def test_missing_or_damaged_generation_config_means_no_defaults(tmp_path: Path) -> None:
    assert GenerationDefaults.read(tmp_path) == GenerationDefaults()
    (tmp_path / "generation_config.json").write_text("{not json")
    assert GenerationDefaults.read(tmp_path) == GenerationDefaults()


def test_build_config_is_read_from_config_json(tmp_path: Path) -> None:
    write_fake_engine(
        tmp_path,
        model_id="m",
        vocab_size=32768,
        max_input_len=31744,
        max_seq_len=32768,
        max_batch_size=256,
        max_num_tokens=8192,
        tokens_per_block=64,
        gather_generation_logits=True,
    )
    build = EngineBuildConfig.read(tmp_path)
    assert (build.max_input_len, build.max_seq_len) == (31744, 32768)
    assert (build.max_batch_size, build.max_num_tokens) == (256, 8192)
    assert (build.vocab_size, build.tokens_per_block) == (32768, 64)
    assert build.paged_context_fmha and build.context_fmha and build.remove_input_padding
    assert build.version == "1.2.1"


def test_runtime_limits_are_clipped_to_the_build(tmp_path: Path) -> None:
    build = EngineBuildConfig.read(write_fake_engine(tmp_path, model_id="m", vocab_size=8))
    assert clip_runtime_limits(build, max_batch_size=None, max_num_tokens=None) == (
        clip_runtime_limits(build, max_batch_size=16, max_num_tokens=2048)
    )
    lowered = clip_runtime_limits(build, max_batch_size=4, max_num_tokens=512)
    assert (lowered.max_batch_size, lowered.max_num_tokens) == (4, 512)
    raised = clip_runtime_limits(build, max_batch_size=64, max_num_tokens=4096)
    assert (raised.max_batch_size, raised.max_num_tokens) == (16, 2048)
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        clip_runtime_limits(build, max_batch_size=0, max_num_tokens=None)
