"""The models config file: which models this server serves, with which engine, limits and defaults.

Example (YAML; every key is documented in README.md, "Models config"):

    models:
      - id: mistralai/Mistral-7B-Instruct-v0.3
        aliases: [mistral]
        engine: trtllm
        checkpoint: /models/Mistral-7B-Instruct-v0.3  # tokenizer, template (+ torch weights)
        context_length: 32768
        defaults: {temperature: 0.7}
        options: {engines_root: /engines, kv_cache_free_gpu_memory_fraction: 0.9}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inference.text.tool_format import ToolFormatName

MODELS_ENV_VAR = "TENSORCHAT_MODELS"
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

EngineName = Literal["torch", "trtllm", "synthetic"]


class SamplingDefaults(BaseModel):
    """Values used when a request leaves the field unset."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    engine: EngineName = "torch"
    # A Hugging Face checkpoint dir: tokenizer, chat template, generation_config.json and,
    # for the torch engine, the weights.
    checkpoint: Path | None = None
    # torch only: a GGUF file, converted once into a cached checkpoint dir.
    gguf: Path | None = None
    # Prompt + completion tokens; default: the checkpoint's max_position_embeddings (or the
    # TensorRT-LLM engine's max_seq_len).
    context_length: int | None = Field(None, gt=0)
    # Most tokens one completion may ask for; default: the context length.
    max_output_tokens: int | None = Field(None, gt=0)
    defaults: SamplingDefaults = Field(default_factory=SamplingDefaults)
    # How tools, tool calls and results appear in prompts and outputs (README.md, "Models
    # config"): auto = mistral for a Mistral v3 vocabulary, qwen for a template that renders
    # tools with <tool_call>, else generic.
    tool_format: ToolFormatName = "auto"
    # Engine keyword arguments (see README.md, "Engine options").
    options: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _weights_source(self) -> ModelConfig:
        if (self.checkpoint is None) == (self.gguf is None):
            raise ValueError(f"model {self.id!r}: set exactly one of 'checkpoint' and 'gguf'")
        if self.gguf is not None and self.engine != "torch":
            raise ValueError(f"model {self.id!r}: 'gguf' is only supported by the torch engine")
        return self


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: dict[str, str] = {}
        for model in models:
            for name in (model.id, *model.aliases):
                key = name.lower()
                if key in seen:
                    raise ValueError(
                        f"name {name!r} is used by both {seen[key]!r} and {model.id!r}"
                    )
                seen[key] = model.id
        return models


def load_models_config(path: Path) -> ModelsConfig:
    """Parses a models config file; relative paths in it are relative to the file."""
    raw = yaml.safe_load(path.read_text())
    config = ModelsConfig.model_validate(raw)
    base = path.resolve().parent
    for model in config.models:
        if model.checkpoint is not None and not model.checkpoint.is_absolute():
            model.checkpoint = base / model.checkpoint
        if model.gguf is not None and not model.gguf.is_absolute():
            model.gguf = base / model.gguf
    return config


def default_models_config() -> ModelsConfig:
    """The embedded default model, so a first `tensorchat serve` works with no config at all."""
    from inference.engines.torch.loader import default_model_gguf

    return ModelsConfig(
        models=[
            ModelConfig(
                id=DEFAULT_MODEL_ID,
                aliases=["smollm2", "default"],
                engine="torch",
                gguf=default_model_gguf(),
                context_length=8192,
            )
        ]
    )


def resolve_models_config(path: Path | None) -> ModelsConfig:
    """The config named by flag, else by $TENSORCHAT_MODELS, else the embedded default model."""
    if path is None and os.environ.get(MODELS_ENV_VAR):
        path = Path(os.environ[MODELS_ENV_VAR])
    return load_models_config(path) if path is not None else default_models_config()
