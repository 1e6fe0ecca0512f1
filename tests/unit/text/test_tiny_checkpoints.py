"""The tiny test checkpoints load as normal Hugging Face checkpoints and are reproducible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from inference.text import ChatMessage, ModelTokenizer
from tests.support import tokenizer_assets as assets
from tests.support.tiny_models import build_tiny_mistral


@pytest.mark.slow  # a model and tokenizer load each: seconds, more on a busy machine
@pytest.mark.parametrize(
    ("fixture", "architecture", "rows"),
    [
        ("tiny_mistral_dir", "MistralForCausalLM", assets.MISTRAL_VOCAB_SIZE),
        ("tiny_qwen2_dir", "Qwen2ForCausalLM", assets.QWEN_EMBEDDING_ROWS),
    ],
)
def test_checkpoint_loads_and_generates_deterministically(
    request: pytest.FixtureRequest, fixture: str, architecture: str, rows: int
) -> None:
    directory: Path = request.getfixturevalue(fixture)
    model: Any = AutoModelForCausalLM.from_pretrained(directory)
    assert type(model).__name__ == architecture
    config = model.config
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert model.get_input_embeddings().weight.shape == (rows, 64)
    assert model.dtype == torch.bfloat16

    tok = ModelTokenizer.from_pretrained(directory)
    prompt = torch.tensor([tok.encode_chat([ChatMessage("user", "Hello!")])])
    runs = [
        model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None)[0].tolist()
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert len(runs[0]) == prompt.shape[1] + 8


def test_building_again_gives_the_same_weights(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    rebuilt = build_tiny_mistral(tmp_path / "again")
    first = load_file(tiny_mistral_dir / "model.safetensors")
    second = load_file(rebuilt / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (rebuilt / "tokenizer.json").read_bytes() == (
        tiny_mistral_dir / "tokenizer.json"
    ).read_bytes()
