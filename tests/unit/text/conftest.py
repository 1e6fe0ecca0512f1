"""Loaded tokenizers of the tiny test checkpoints, shared by the text-layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.text import ModelTokenizer


@pytest.fixture(scope="session")
def mistral_tokenizer(tiny_mistral_dir: Path) -> ModelTokenizer:
    return ModelTokenizer.from_pretrained(tiny_mistral_dir)


@pytest.fixture(scope="session")
def qwen2_tokenizer(tiny_qwen2_dir: Path) -> ModelTokenizer:
    return ModelTokenizer.from_pretrained(tiny_qwen2_dir)


@pytest.fixture(params=["mistral", "qwen2"])
def tok(request: pytest.FixtureRequest) -> ModelTokenizer:
    """Each of the two real tokenizers in turn."""
    tokenizer: ModelTokenizer = request.getfixturevalue(f"{request.param}_tokenizer")
    return tokenizer
