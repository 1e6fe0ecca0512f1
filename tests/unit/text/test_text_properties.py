"""Property tests of the text layer over random text (hypothesis; seeded, so reproducible)."""

from __future__ import annotations

import itertools
import unicodedata

import pytest

from inference.text import ModelTokenizer
from tests.support.text_checks import full_decode, plain_ids, reference, run, stream

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=4),
    text=st.text(alphabet="abcd", max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=10),
)
def test_any_chunking_gives_the_character_by_character_answer(
    stops: list[str], text: str, cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(stops, chunks) == reference(stops, text)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(max_size=40), chunking=st.lists(st.integers(1, 4), max_size=40))
def test_random_text_streams_to_its_full_decode(
    tok: ModelTokenizer, text: str, chunking: list[int]
) -> None:
    ids = plain_ids(tok, text)
    deltas = stream(tok, ids, chunking)
    assert "".join(deltas) == full_decode(tok, ids)
    if "\ufffd" not in full_decode(tok, ids):
        assert all("\ufffd" not in d for d in deltas)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(max_size=30))
def test_token_bytes_reassemble_the_text(
    mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer, text: str
) -> None:
    q_ids = qwen2_tokenizer.encode_prompt(text)
    assert b"".join(map(qwen2_tokenizer.token_bytes, q_ids)) == (
        unicodedata.normalize("NFC", text).encode()
    )
    # SentencePiece spells spaces as "▁" and prepends one to the text (the first token's
    # leading space, which full decodes drop).
    m_ids = mistral_tokenizer.encode_prompt(text)[1:]  # without BOS
    if text and not text.startswith(" "):
        assert b"".join(map(mistral_tokenizer.token_bytes, m_ids)) == (" " + text).encode()
