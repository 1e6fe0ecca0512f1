"""ModelTokenizer: EOS ids, vocabulary size, raw prompts and per-token bytes for logprobs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inference.text import ChatMessage, ChatTemplateError, ModelTokenizer
from tests.support import tokenizer_assets as assets


def test_eos_ids_join_tokenizer_and_generation_config(
    mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer
) -> None:
    assert mistral_tokenizer.eos_token_ids == frozenset({assets.MISTRAL_GENERATION_EOS})
    # <|im_end|> from the tokenizer, <|endoftext|> too from generation_config.json.
    assert qwen2_tokenizer.eos_token_ids == frozenset(assets.QWEN_GENERATION_EOS)


def test_vocab_size_counts_added_tokens(
    mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer
) -> None:
    assert mistral_tokenizer.vocab_size == 32768
    assert qwen2_tokenizer.vocab_size == 151643 + len(assets.QWEN_ADDED_TOKENS)


def test_encode_prompt_adds_bos_only_where_the_tokenizer_does(
    mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer
) -> None:
    assert mistral_tokenizer.encode_prompt("Hello") == [1, 23325]
    assert qwen2_tokenizer.encode_prompt("Hello")[0] != 151643
    for tok in (mistral_tokenizer, qwen2_tokenizer):
        text = "The capital of France is Paris.\n\tdef f(): return 1 😀"
        assert tok.encode_prompt(text) == list(tok.hf(text)["input_ids"])


def test_encode_prompt_keeps_special_strings_as_text(
    mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer
) -> None:
    m = mistral_tokenizer.encode_prompt("[INST] hi </s>")
    assert m[0] == 1 and not {2, 3, 4} & set(m[1:])
    q = qwen2_tokenizer.encode_prompt("<|im_start|>user\nhi<|im_end|>")
    assert not {151643, 151644, 151645} & set(q)
    assert qwen2_tokenizer.hf.decode(q) == "<|im_start|>user\nhi<|im_end|>"


def test_token_bytes_and_text_of_special_byte_and_unknown_ids(
    mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer
) -> None:
    assert qwen2_tokenizer.token_bytes(151645) == b"<|im_end|>"
    assert qwen2_tokenizer.token_text(151657) == "<tool_call>"
    assert mistral_tokenizer.token_bytes(3) == b"[INST]"
    assert mistral_tokenizer.token_bytes(23325) == b" Hello"
    f0 = mistral_tokenizer.hf.backend_tokenizer.token_to_id("<0xF0>")
    assert f0 is not None
    assert mistral_tokenizer.token_bytes(f0) == b"\xf0"
    assert mistral_tokenizer.token_text(f0) == "\ufffd"
    space = qwen2_tokenizer.encode_prompt(" ")
    assert [qwen2_tokenizer.token_bytes(i) for i in space] == [b" "]
    # Padded embedding rows past the tokenizer: no bytes rather than an error.
    assert qwen2_tokenizer.token_bytes(152000) == b""
    assert qwen2_tokenizer.token_text(152000) == ""


def test_a_checkpoint_without_chat_template_still_serves_prompts(
    tiny_mistral_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(tiny_mistral_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    config = json.loads((tiny_mistral_dir / "tokenizer_config.json").read_text())
    del config["chat_template"]
    config["eos_token"] = "[/INST]"  # no generation_config.json here: only this one counts
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = ModelTokenizer.from_pretrained(tmp_path)
    assert tok.eos_token_ids == frozenset({4})
    assert tok.encode_prompt("Hello") == [1, 23325]
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tok.encode_chat([ChatMessage("user", "hi")])
