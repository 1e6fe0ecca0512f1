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
from inference.grammar import GrammarCompiler
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
    # Compiles the output constraints of this model's requests (its tokenizer and vocabulary).
    grammar: GrammarCompiler

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
            model.grammar.close()


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
    # The bitmask must cover the logits' width: the engine's vocabulary (embedding rows, padded
    # past the tokenizer's in Qwen2.5), else the tokenizer's.
    engine_vocab: int | None = getattr(engine, "vocab_size", None)
    try:
        grammar = await asyncio.to_thread(
            GrammarCompiler,
            tokenizer.hf,
            vocab_size=max(engine_vocab or 0, tokenizer.vocab_size),
            stop_token_ids=tokenizer.eos_token_ids,
        )
    except BaseException:
        await engine.shutdown()
        raise
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
        created=checkpoint_created(checkpoint_dir),
        grammar=grammar,
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


def checkpoint_created(checkpoint_dir: Path) -> int:
    """When the checkpoint was written (its newest config or weights file): the model's
    `created`, from which the facade derives `system_fingerprint`. Not the load time, so a
    restart on the same model and engine keeps the fingerprint, as OpenAI's does."""
    files = [checkpoint_dir / "config.json", *checkpoint_dir.glob("*.safetensors")]
    return int(max(file.stat().st_mtime for file in files if file.is_file()))


def _checkpoint_context_length(checkpoint_dir: Path) -> int:
    config = json.loads((checkpoint_dir / "config.json").read_text())
    length = config.get("max_position_embeddings")
    if not isinstance(length, int) or length <= 0:
        raise ValueError(
            f"{checkpoint_dir}/config.json has no max_position_embeddings: set context_length"
        )
    return length
