"""The model registry: served models by id and alias, with their tokenizer, engine and limits."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from inference.config import ModelConfig, ModelsConfig
from inference.engines.base import Engine
from inference.engines.factory import create_engine
from inference.text.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    config: ModelConfig
    checkpoint_dir: Path
    tokenizer: ModelTokenizer
    engine: Engine
    context_length: int
    # Longest prompt the engine accepts (a TensorRT-LLM engine's max_input_len; else the context).
    max_input_tokens: int
    max_output_tokens: int
    created: int

    @property
    def id(self) -> str:
        return self.config.id


class ModelRegistry:
    """Finds models by id or alias, case-insensitively (clients send `qwen/...` and `Qwen/...`)."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._models = models
        self._by_name = {
            name.lower(): model for model in models for name in (model.id, *model.config.aliases)
        }

    def resolve(self, name: str) -> ServedModel | None:
        return self._by_name.get(name.strip().lower())

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    @classmethod
    async def load(cls, config: ModelsConfig) -> ModelRegistry:
        """Loads every model; on any failure, shuts down what was already started."""
        models: list[ServedModel] = []
        try:
            for model_config in config.models:
                models.append(await load_model(model_config))
        except BaseException:
            await cls(models).shutdown()
            raise
        return cls(models)

    async def shutdown(self) -> None:
        for model in self._models:
            await model.engine.shutdown()


async def load_model(config: ModelConfig) -> ServedModel:
    started = time.monotonic()
    checkpoint_dir = await asyncio.to_thread(_checkpoint_dir, config)
    tokenizer = await asyncio.to_thread(
        ModelTokenizer.from_pretrained, checkpoint_dir, config.tool_format
    )
    engine = create_engine(config, checkpoint_dir, tokenizer)
    await engine.start()
    # A compiled engine's limits are hard (max_seq_len, max_input_len): the config may lower
    # them, never raise them.
    engine_context: int | None = getattr(engine, "context_length", None)
    context_length = (
        config.context_length or engine_context or _checkpoint_context_length(checkpoint_dir)
    )
    if engine_context is not None and context_length > engine_context:
        log.warning(
            "%s: context_length %d exceeds the engine's %d; using %d",
            config.id,
            context_length,
            engine_context,
            engine_context,
        )
        context_length = engine_context
    engine_max_input: int | None = getattr(engine, "max_input_len", None)
    max_input_tokens = min(engine_max_input or context_length, context_length)
    max_output_tokens = min(config.max_output_tokens or context_length, context_length)
    log.info(
        "loaded %s (engine %s, context %d) in %.1fs",
        config.id,
        config.engine,
        context_length,
        time.monotonic() - started,
    )
    return ServedModel(
        config=config,
        checkpoint_dir=checkpoint_dir,
        tokenizer=tokenizer,
        engine=engine,
        context_length=context_length,
        max_input_tokens=max_input_tokens,
        max_output_tokens=max_output_tokens,
        created=int(time.time()),
    )


def _checkpoint_dir(config: ModelConfig) -> Path:
    if config.gguf is not None:
        from inference.engines.torch.loader import prepare_gguf_checkpoint

        return prepare_gguf_checkpoint(config.gguf)
    assert config.checkpoint is not None  # ModelConfig guarantees exactly one source
    if not (config.checkpoint / "config.json").is_file():
        raise FileNotFoundError(
            f"model {config.id!r}: {config.checkpoint} is not a Hugging Face checkpoint dir "
            "(no config.json)"
        )
    return config.checkpoint


def _checkpoint_context_length(checkpoint_dir: Path) -> int:
    config = json.loads((checkpoint_dir / "config.json").read_text())
    length = config.get("max_position_embeddings")
    if not isinstance(length, int) or length <= 0:
        raise ValueError(
            f"{checkpoint_dir}/config.json has no max_position_embeddings: set context_length"
        )
    return length
