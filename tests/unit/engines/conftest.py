"""Fixtures for engine tests: a tiny random Llama checkpoint with a small vocabulary.

Engines are ids in, ids out, so no tokenizer is saved. The weights are random (seeded) and
built in well under a second; they test loading, batching and sampling, not text quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_VOCAB = 256
TINY_EOS = 2
TINY_CONTEXT = 512


def build_tiny_llama(dest: Path, *, seed: int = 0) -> Path:
    """Save a 2-layer LlamaForCausalLM (vocab 256, float32) with eos id 2 into `dest`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_CONTEXT,
        # Wider than the default 0.02 so next-token logits are far from ties: batched and
        # unbatched float sums differ in the last bits, which must never flip a token.
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=TINY_EOS,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(dest)
    GenerationConfig(bos_token_id=1, eos_token_id=TINY_EOS).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
