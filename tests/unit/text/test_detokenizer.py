"""IncrementalDetokenizer: whole characters only, and deltas that add up to the full decode."""

from __future__ import annotations

import random

import pytest

from inference.text import ModelTokenizer
from tests.support.text_checks import full_decode, plain_ids, stream

SAMPLES = [
    "Hello 😀 world",
    "東京タワーは高い。漢字とかなの混在",
    "emoji run: 👨‍👩‍👧‍👦🇫🇷👍🏽🦀",
    "mixed: naïve café — ∑ x² ≤ ∞ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "code:\n\tdef f(x):\n\t    return x  # ok\n",
    "  leading and trailing spaces  ",
]


def test_multibyte_characters_are_split_across_tokens_in_the_samples(
    mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer
) -> None:
    """Guards the tests below: the samples really put one character in several tokens."""
    m_pieces = mistral_tokenizer.hf.backend_tokenizer.encode("🦀", add_special_tokens=False)
    assert [p for p in m_pieces.tokens if p.startswith("<0x")] == [
        "<0xF0>",
        "<0x9F>",
        "<0xA6>",
        "<0x80>",
    ]
    q_ids = plain_ids(qwen2_tokenizer, "𝔘𝔫𝔦")
    partial = [i for i in q_ids if qwen2_tokenizer.token_text(i) == "\ufffd"]
    assert partial, "expected byte-level tokens that are not whole characters"


@pytest.mark.parametrize("text", SAMPLES)
def test_no_replacement_character_mid_stream_and_deltas_add_up(
    tok: ModelTokenizer, text: str
) -> None:
    ids = plain_ids(tok, text)
    deltas = stream(tok, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == full_decode(tok, ids)


def test_first_token_space_handling_matches_full_decode(mistral_tokenizer: ModelTokenizer) -> None:
    # SentencePiece pieces carry their leading space; decode drops it for the first token only.
    ids = plain_ids(mistral_tokenizer, "Hello world")
    assert stream(mistral_tokenizer, ids) == ["Hello", " world", ""]


def test_special_tokens_are_skipped(tok: ModelTokenizer) -> None:
    eos = min(tok.eos_token_ids)
    ids = [*plain_ids(tok, "one 😀"), eos, *plain_ids(tok, " two")]
    deltas = stream(tok, ids)
    joined = "".join(deltas)
    assert joined == full_decode(tok, ids)
    eos_text = tok.token_text(eos)
    assert eos_text and eos_text not in joined
    assert joined.startswith("one 😀")


def test_flush_releases_a_truncated_character(tok: ModelTokenizer) -> None:
    ids = plain_ids(tok, "ok 🦀")
    # Drop tokens from the end until the text no longer ends in a whole character.
    while ids and not full_decode(tok, ids).endswith("\ufffd"):
        ids = ids[:-1]
    assert ids, "could not cut the emoji"
    detok = tok.new_detokenizer()
    pushed = "".join(detok.push([i]) for i in ids)
    assert "\ufffd" not in pushed
    rest = detok.flush()
    assert rest.endswith("\ufffd")
    assert pushed + rest == full_decode(tok, ids)
    assert detok.flush() == ""


def test_padded_vocabulary_ids_decode_to_nothing(qwen2_tokenizer: ModelTokenizer) -> None:
    # The Qwen 7B embedding has 152064 rows for 151665 tokens.
    ids = [*plain_ids(qwen2_tokenizer, "a"), 152000, *plain_ids(qwen2_tokenizer, "b")]
    assert "".join(stream(qwen2_tokenizer, ids)) == "ab"


def test_random_token_ids_stream_to_their_full_decode(tok: ModelTokenizer) -> None:
    """Arbitrary id sequences, including invalid UTF-8 byte runs and special tokens."""
    rnd = random.Random(5)
    byte_ids = []  # single-byte tokens, many of them UTF-8 lead or continuation bytes
    for i in range(tok.vocab_size):
        if len(tok.token_bytes(i)) == 1 and tok.token_bytes(i)[0] >= 0x80:
            byte_ids.append(i)
        if len(byte_ids) == 128:
            break
    for _ in range(300):
        ids = [
            rnd.choice(byte_ids) if rnd.random() < 0.6 else rnd.randrange(tok.vocab_size)
            for _ in range(rnd.randint(1, 20))
        ]
        sizes = [rnd.randint(1, 3) for _ in ids]
        assert "".join(stream(tok, ids, sizes)) == full_decode(tok, ids), ids
