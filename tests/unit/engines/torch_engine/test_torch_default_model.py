"""The embedded default model end to end: import its GGUF for real, then answer a question."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from inference.engines.base import EngineFinish
from inference.engines.torch import loader
from inference.engines.torch.engine import TorchEngine
from tests.unit.engines.torch_engine.helpers import collect, make_request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A private cache dir, so this really converts (about 20-60 s) instead of reusing ~/.cache.
    return loader.prepare_gguf_checkpoint(
        loader.default_model_gguf(), tmp_path_factory.mktemp("tc-cache")
    )


def test_the_import_is_complete_and_cached(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (smollm2_dir / name).is_file(), name
    assert "quantization_config" not in (smollm2_dir / "config.json").read_text()
    assert loader.eos_token_ids(smollm2_dir) == frozenset({2})  # <|im_end|>

    def no_reparse(gguf_path: Path, out_dir: Path) -> None:
        raise AssertionError("the GGUF was parsed again")

    # The cached checkpoint is reused: `no_reparse` fails the test if the GGUF is read again.
    monkeypatch.setattr(loader, "_convert_gguf", no_reparse)
    again = loader.prepare_gguf_checkpoint(loader.default_model_gguf(), smollm2_dir.parent)
    assert again == smollm2_dir


async def test_greedy_answer_names_paris(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    assert isinstance(prompt, list)
    prompt_ids = [t for t in prompt if isinstance(t, int)]
    assert len(prompt_ids) == len(prompt)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 2
    engine = TorchEngine(smollm2_dir)
    await engine.start()
    try:
        req = make_request(
            "paris",
            prompt_ids,
            eos=loader.eos_token_ids(smollm2_dir),
            temperature=0.0,
            max_tokens=30,
        )
        got = await collect(engine, req)
    finally:
        await engine.shutdown()
    text = tokenizer.decode(got.tokens[0], skip_special_tokens=True)
    assert "Paris" in text
    assert got.finish() == EngineFinish.EOS
