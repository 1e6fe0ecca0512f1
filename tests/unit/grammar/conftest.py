"""A GrammarCompiler over the tiny Mistral checkpoint's real tokenizer, shared by the module."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.grammar import GrammarCompiler
from inference.text.tokenizer import ModelTokenizer


@pytest.fixture(scope="session")
def mistral_tokenizer(tiny_mistral_dir: Path) -> ModelTokenizer:
    return ModelTokenizer.from_pretrained(tiny_mistral_dir)


@pytest.fixture()
def compiler(mistral_tokenizer: ModelTokenizer) -> GrammarCompiler:
    return GrammarCompiler(
        mistral_tokenizer.hf,
        vocab_size=mistral_tokenizer.vocab_size,
        stop_token_ids=mistral_tokenizer.eos_token_ids,
    )
