"""Builds the real Mistral v0.3 and Qwen2.5 tokenizers from files that PyPI packages ship.

No model hub is reachable here, so the tokenizers are rebuilt from their sources:
- Mistral v0.3: the SentencePiece model inside `mistral-common`, converted to a Hugging Face
  fast tokenizer the way transformers converts Llama-family models (BPE with byte
  fallback, Metaspace with prepend scheme "first", a BOS post-processor, control pieces as
  special tokens), except that merges are ordered by piece score: ordered by id they
  mis-split runs of spaces, because SentencePiece merges whitespace pieces last.
- Qwen2.5: `qwen.tiktoken` from the `dashscope==2.0.2` wheel (scripts/fetch-test-assets puts
  it in the test-assets dir), converted with transformers' own TikTokenConverter, plus
  Qwen's NFC normaliser and its 22 added tokens.

Each `write_*` function writes tokenizer.json and a tokenizer_config.json that mirrors the
published checkpoint's (tokenizer class, special tokens, the real chat template).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

TEMPLATES = Path(__file__).parent / "templates"
# tokenizer_config.json "chat_template" of mistralai/Mistral-7B-Instruct-v0.3 (3959 bytes).
MISTRAL_CHAT_TEMPLATE = TEMPLATES / "mistral-7b-instruct-v0.3.jinja"
# tokenizer_config.json "chat_template" of Qwen/Qwen2.5-Coder-7B-Instruct, the same as
# Qwen2.5-Instruct's (2507 bytes).
QWEN_CHAT_TEMPLATE = TEMPLATES / "qwen2.5-coder-7b-instruct.jinja"

# generation_config.json eos_token_id of the published instruct checkpoints.
MISTRAL_GENERATION_EOS: int = 2
QWEN_GENERATION_EOS: list[int] = [151645, 151643]

MISTRAL_SPM_FILE = "mistral_instruct_tokenizer_240323.model.v3"
MISTRAL_VOCAB_SIZE = 32768

QWEN_TIKTOKEN_FILE = "qwen.tiktoken"
QWEN_TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
# Qwen2/2.5's pre-tokenizer regex (single digits, unlike cl100k's \p{N}{1,3}).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_FIRST_ADDED_ID = 151643
# Ids 151643.. in order; the first 14 are special (control) tokens, the rest are ordinary
# added tokens that the model also reads and writes as text (tool calls, fill-in-the-middle).
QWEN_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN_SPECIAL_COUNT = 14
QWEN_EMBEDDING_ROWS = 152064  # the 7B models' padded vocabulary


class MissingAsset(RuntimeError):
    """A file the tests need is not on this machine (the message says how to get it)."""


def assets_dir() -> Path:
    """Where scripts/fetch-test-assets puts files and the tests cache what they build."""
    default = Path.home() / ".cache" / "tensorchat" / "test-assets"
    return Path(os.environ.get("TENSORCHAT_TEST_ASSETS") or default)


def mistral_spm_path() -> Path:
    try:
        import mistral_common
    except ImportError as e:
        raise MissingAsset("mistral-common is not installed (pip install -e '.[dev]')") from e
    path = Path(mistral_common.__file__).parent / "data" / MISTRAL_SPM_FILE
    if not path.is_file():
        raise MissingAsset(f"{path} is missing from this mistral-common install")
    return path


def qwen_tiktoken_path() -> Path:
    path = assets_dir() / QWEN_TIKTOKEN_FILE
    if not path.is_file():
        raise MissingAsset(f"{path} is missing: run scripts/fetch-test-assets")
    return path


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- Mistral v0.3 ------------------------------------------------------------------------


def build_mistral_tokenizer() -> Tokenizer:
    """Mistral v0.3's SentencePiece model as a Hugging Face fast tokenizer."""
    from transformers.convert_slow_tokenizer import import_protobuf
    from transformers.tokenization_utils_base import generate_merges

    model = import_protobuf().ModelProto()
    model.ParseFromString(mistral_spm_path().read_bytes())
    # SentencePiece piece types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
    pieces = [(p.piece, p.score, p.type) for p in model.pieces]
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    normal_scores = {piece: score for piece, score, kind in pieces if kind == 1}
    # Only normal pieces take part in merges: a merge that produced a control piece would
    # let plain text such as "[INST]" turn into the control token.
    not_mergeable = {piece for piece, _, kind in pieces if kind != 1}
    merges = generate_merges(vocab, normal_scores, skip_tokens=not_mergeable)

    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first", split=False
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_tokens(
        [
            AddedToken(piece, special=kind != 4, normalized=False)
            for piece, _, kind in pieces
            if kind in (2, 3, 4)
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tok


def mistral_tokenizer_config() -> dict[str, Any]:
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "model_max_length": 32768,
        "tokenizer_class": "LlamaTokenizer",
        "chat_template": MISTRAL_CHAT_TEMPLATE.read_text(encoding="utf-8"),
    }


def write_mistral_tokenizer(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    build_mistral_tokenizer().save(str(dest / "tokenizer.json"))
    _write_json(dest / "tokenizer_config.json", mistral_tokenizer_config())


# -- Qwen2.5 -----------------------------------------------------------------------------


def build_qwen2_tokenizer() -> Tokenizer:
    """Qwen2.5's byte-level BPE tokenizer from qwen.tiktoken."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = qwen_tiktoken_path()
    if file_sha256(path) != QWEN_TIKTOKEN_SHA256:
        raise MissingAsset(f"{path} is not the dashscope 2.0.2 file: run scripts/fetch-test-assets")
    tok = TikTokenConverter(vocab_file=str(path), pattern=QWEN_PATTERN).converted()
    tok.normalizer = normalizers.NFC()
    tok.add_tokens(
        [
            AddedToken(content, special=i < QWEN_SPECIAL_COUNT, normalized=False)
            for i, content in enumerate(QWEN_ADDED_TOKENS)
        ]
    )
    added = tok.get_added_tokens_decoder()
    expected = {QWEN_FIRST_ADDED_ID + i: c for i, c in enumerate(QWEN_ADDED_TOKENS)}
    if {i: t.content for i, t in added.items()} != expected:
        raise RuntimeError("Qwen added tokens did not land on ids 151643..151664")
    return tok


def qwen2_tokenizer_config() -> dict[str, Any]:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "additional_special_tokens": list(QWEN_ADDED_TOKENS[1:QWEN_SPECIAL_COUNT]),
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": QWEN_CHAT_TEMPLATE.read_text(encoding="utf-8"),
    }


def write_qwen2_tokenizer(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    build_qwen2_tokenizer().save(str(dest / "tokenizer.json"))
    _write_json(dest / "tokenizer_config.json", qwen2_tokenizer_config())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
