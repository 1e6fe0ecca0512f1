"""Builds the engine a model's config names; engine modules are imported only when chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.config import ModelConfig
from inference.engines.base import Engine
from inference.text.tokenizer import ModelTokenizer


def create_engine(config: ModelConfig, checkpoint_dir: Path, tokenizer: ModelTokenizer) -> Engine:
    options: dict[str, Any] = dict(config.options)
    if config.engine == "torch":
        from inference.engines.torch.engine import TorchEngine

        return TorchEngine(checkpoint_dir, **options)
    if config.engine == "trtllm":
        from inference.engines.trtllm.engine import TrtllmEngine

        return TrtllmEngine(
            model_id=config.id, tokenizer_dir=checkpoint_dir, tokenizer=tokenizer, **options
        )
    if config.engine == "synthetic":
        from inference.engines.synthetic import SyntheticEngine

        # Tokens that decode to whole characters on their own (no specials, no partial UTF-8
        # bytes), so every emitted token is visible text, as a real model's mostly are.
        special = set(tokenizer.hf.all_special_ids)
        vocab_ids = [
            i
            for i in range(1000, min(tokenizer.vocab_size, 9000))
            if i not in special and "\ufffd" not in tokenizer.token_text(i)
        ]
        options.setdefault("vocab_ids", vocab_ids)
        return SyntheticEngine(**options)
    raise ValueError(f"unknown engine {config.engine!r}")
