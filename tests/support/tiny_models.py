"""Tiny randomly initialised Mistral and Qwen2 checkpoints with the real tokenizers.

They exercise the real loading, templating, batching and streaming paths (hidden 64,
intermediate 128, 2 layers, 4 heads, 2 KV heads, the real vocabulary sizes); their text is
gibberish. Random weights do not compress, so they are built from a seed, not committed;
`cached_checkpoint` keeps one copy per content hash under the test-assets dir.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tests.support import tokenizer_assets as assets

SEED = 1234
ROPE = {"rope_type": "default", "rope_theta": 1_000_000.0}


# Both tiny models share one shape: the real vocabularies, everything else minimal.
TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_parameters": ROPE,
    "tie_word_embeddings": False,
}


def build_tiny_mistral(dest: Path) -> Path:
    """A Mistral-7B-Instruct-v0.3-shaped checkpoint (vocab 32768) written to `dest`."""
    from transformers import MistralConfig, MistralForCausalLM

    assets.write_mistral_tokenizer(dest)
    config = MistralConfig(
        vocab_size=assets.MISTRAL_VOCAB_SIZE,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
        **TINY_SHAPE,
    )
    _save_seeded(MistralForCausalLM, config, dest)
    _write_generation_config(dest, bos=1, eos=assets.MISTRAL_GENERATION_EOS)
    return dest


def build_tiny_qwen2(dest: Path) -> Path:
    """A Qwen2.5-Coder-7B-Instruct-shaped checkpoint (152064 embedding rows) written to `dest`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    assets.write_qwen2_tokenizer(dest)
    config = Qwen2Config(
        vocab_size=assets.QWEN_EMBEDDING_ROWS,
        use_sliding_window=False,
        bos_token_id=151643,
        eos_token_id=151645,
        **TINY_SHAPE,
    )
    _save_seeded(Qwen2ForCausalLM, config, dest)
    _write_generation_config(dest, bos=151643, eos=assets.QWEN_GENERATION_EOS)
    return dest


def _save_seeded(model_class: Any, config: Any, dest: Path) -> None:
    """Random weights from SEED (the global RNG untouched), saved in bf16."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    model.bfloat16().save_pretrained(dest)


def _write_generation_config(dest: Path, *, bos: int, eos: int | list[int]) -> None:
    # Only the facts the published files state that the serving stack reads (the EOS ids).
    data = {"bos_token_id": bos, "eos_token_id": eos}
    (dest / "generation_config.json").write_text(json.dumps(data, indent=2) + "\n")


def _content_key(extra: str) -> str:
    """Hash of everything a built checkpoint depends on, so a change rebuilds it."""
    h = hashlib.sha256(extra.encode())
    support = Path(__file__).parent
    sources = [support / "tiny_models.py", support / "tokenizer_assets.py"]
    for path in [*sources, *sorted((support / "templates").glob("*.jinja"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for package in ("torch", "transformers", "tokenizers"):
        h.update(f"{package}={version(package)}".encode())
    return h.hexdigest()[:16]


def cached_checkpoint(name: str, build: Callable[[Path], Path], extra_key: str = "") -> Path:
    """Builds a checkpoint once per content hash; safe when several test runs race."""
    root = assets.assets_dir() / "checkpoints"
    final = root / f"{name}-{_content_key(extra_key)}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _prune(root, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    tmp.chmod(0o755)
    try:
        build(tmp)
        tmp.rename(final)  # atomic: readers see a complete dir or none
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _prune(root: Path, name: str) -> None:
    """Removes builds of other versions of this checkpoint that nobody touched for a day."""
    day_ago = time.time() - 24 * 3600
    for old in root.glob(f"{name}-*"):
        if old.is_dir() and old.stat().st_mtime < day_ago:
            shutil.rmtree(old, ignore_errors=True)


def tiny_mistral_checkpoint() -> Path:
    assets.mistral_spm_path()  # raises MissingAsset first, before any work
    return cached_checkpoint("tiny-mistral", build_tiny_mistral, version("mistral-common"))


def tiny_qwen2_checkpoint() -> Path:
    digest = assets.file_sha256(assets.qwen_tiktoken_path())
    return cached_checkpoint("tiny-qwen2", build_tiny_qwen2, digest)
