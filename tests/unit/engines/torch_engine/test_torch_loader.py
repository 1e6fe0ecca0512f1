"""Loader: checkpoint loading, the default model's location, and the GGUF import cache.

The cache tests replace the 20-second GGUF parse with a small stand-in converter, so they
can check what the cache does around a conversion (once, atomically, keyed by the file);
the real conversion runs in test_torch_default_model.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from inference.engines.torch import loader


def test_load_model_in_eval_mode_without_grads(tiny_llama_dir: Path) -> None:
    model = loader.load_model(tiny_llama_dir)
    assert not model.training
    assert model.dtype == torch.float32
    assert all(not p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"


def test_load_model_in_bf16(tiny_llama_dir: Path) -> None:
    assert loader.load_model(tiny_llama_dir, dtype="bf16").dtype == torch.bfloat16


def test_auto_dtype_is_float32_on_cpu_and_the_checkpoints_elsewhere() -> None:
    assert loader.resolve_dtype("auto", torch.bfloat16, "cpu") == torch.float32
    assert loader.resolve_dtype("auto", torch.bfloat16, "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        loader.resolve_dtype("int3", None, "cpu")


def test_eos_ids_come_from_the_generation_config(tiny_llama_dir: Path) -> None:
    assert loader.eos_token_ids(tiny_llama_dir) == frozenset({2})


def test_default_model_gguf_is_found_in_the_installed_wheel() -> None:
    path = loader.default_model_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "tiny.Q4_0.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


class FakeConverter:
    """Writes what a real conversion writes (config + safetensors), or dies half-way."""

    def __init__(self, die_after_config: bool = False) -> None:
        self.calls = 0
        self.die_after_config = die_after_config

    def __call__(self, gguf_path: Path, out_dir: Path) -> None:
        self.calls += 1
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        if self.die_after_config:
            raise KeyboardInterrupt("killed mid-conversion")
        (out_dir / "model.safetensors").write_bytes(b"weights")


def test_converts_once_then_reuses_the_cache(
    gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = FakeConverter()
    monkeypatch.setattr(loader, "_convert_gguf", convert)
    root = tmp_path / "cache"
    first = loader.prepare_gguf_checkpoint(gguf_file, root)
    second = loader.prepare_gguf_checkpoint(gguf_file, root)
    assert first == second and convert.calls == 1
    assert first.parent == root and first.name.startswith("tiny.Q4_0-")
    assert (first / "model.safetensors").is_file()
    assert [p for p in root.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_killed_conversion_leaves_no_cache_entry(
    gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    monkeypatch.setattr(loader, "_convert_gguf", FakeConverter(die_after_config=True))
    with pytest.raises(KeyboardInterrupt):
        loader.prepare_gguf_checkpoint(gguf_file, root)
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []
    # The next start converts again, from scratch, and succeeds.
    retry = FakeConverter()
    monkeypatch.setattr(loader, "_convert_gguf", retry)
    done = loader.prepare_gguf_checkpoint(gguf_file, root)
    assert retry.calls == 1 and (done / "model.safetensors").is_file()


def test_leftovers_of_a_hard_kill_are_removed(
    gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGKILL skips `finally`: the half-written temp dir stays behind until the next run.
    root = tmp_path / "cache"
    stale = root / f".tmp-{loader.gguf_cache_key(gguf_file)}-99999"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    monkeypatch.setattr(loader, "_convert_gguf", FakeConverter())
    loader.prepare_gguf_checkpoint(gguf_file, root)
    assert not stale.exists()


def test_a_changed_file_gets_a_new_cache_entry(
    gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = FakeConverter()
    monkeypatch.setattr(loader, "_convert_gguf", convert)
    root = tmp_path / "cache"
    before = loader.prepare_gguf_checkpoint(gguf_file, root)
    gguf_file.write_bytes(b"GGUF" + b"\1" * 60)
    after = loader.prepare_gguf_checkpoint(gguf_file, root)
    assert after != before and convert.calls == 2


def test_two_clones_share_one_conversion_of_the_same_file(
    gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each clone's venv has its own copy of the default model, written at its own time."""
    convert = FakeConverter()
    monkeypatch.setattr(loader, "_convert_gguf", convert)
    root = tmp_path / "cache"
    other_clone = tmp_path / "clone-2" / gguf_file.name
    other_clone.parent.mkdir()
    other_clone.write_bytes(gguf_file.read_bytes())
    stat = gguf_file.stat()
    os.utime(other_clone, ns=(stat.st_atime_ns, stat.st_mtime_ns + 86_400 * 10**9))
    first = loader.prepare_gguf_checkpoint(gguf_file, root)
    second = loader.prepare_gguf_checkpoint(other_clone, root)
    assert first == second and convert.calls == 1


def test_cache_root_follows_the_environment(
    gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "_convert_gguf", FakeConverter())
    monkeypatch.setenv("TENSORCHAT_CACHE_DIR", str(tmp_path / "tc"))
    path = loader.prepare_gguf_checkpoint(gguf_file)
    assert path.parent == tmp_path / "tc" / "checkpoints"
    monkeypatch.delenv("TENSORCHAT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert loader.checkpoint_cache_root() == tmp_path / "home" / ".cache/tensorchat/checkpoints"
