"""Chat prompts to token ids with the model's own template, so that message text can never
become a control token.

Hugging Face tokenizers find special-token strings anywhere in their input before BPE runs,
so rendering a template and encoding the result lets a user who types `<|im_start|>` or
`[INST]` forge conversation turns. Here the template is rendered twice: once as is (the
exact prompt text the model expects) and once with every message's content wrapped in
marker characters. The markers tell which characters of the prompt came from the template
and which from messages; special tokens are then recognised only in template text, and the
text between them is encoded with special-token matching switched off. For conversations
without injected control strings this gives exactly the ids the template and tokenizer give
together (the tests prove it against mistral-common and tiktoken).

Both renders use the compiled template directly (chat_template.py: what apply_chat_template
renders, for half its cost). The ids of the pieces of pure template text are cached per
encoder (`TEMPLATE_IDS_CACHE_SIZE`): most of a short request's tokenizer calls encode only
template text. On the default model, one 16-word message: 138.7 -> 72.3 CPU µs per encode
(benchmarks/chat_encoding.py, issue 20).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from inference.text.chat_template import ChatTemplate, ChatTemplateError

# What a chat template renders: the messages and the tools (None: no tools), as the
# template expects them (Hugging Face's `apply_chat_template` shapes), as plain JSON data with
# no None-valued message keys: ChatTemplate renders them without apply_chat_template's
# normalisation, which changes nothing on such data.
TemplateArgs = tuple[list[dict[str, Any]], list[Any] | None]
# Builds TemplateArgs, passing every string that came from the request (message text, tool
# names, arguments, schemas) through `mark`; the encoder calls it once as is and once with
# a `mark` that wraps the string in marker characters.
TemplateInput = Callable[[Callable[[str], str]], TemplateArgs]

# Unicode noncharacters are reserved for a program's internal use, which is what markers are.
# A pair that occurs nowhere in the conversation is picked per request, so content that
# happens to contain one cannot confuse the parser.
_MARKERS = tuple(chr(c) for c in range(0xFDD0, 0xFDF0))

# The token ids of pieces of pure template text (between special tokens, without message
# text: a default system prompt, "\n", "assistant\n") are cached: they are 4 of the 5
# tokenizer calls of a one-message ChatML request. Bounded in entries and in the length of
# what is kept, because blank message content is left unmarked (see `_marked_segments`) and
# so also counts as template text: a client can make that text as varied as it likes.
TEMPLATE_IDS_CACHE_SIZE = 256
TEMPLATE_IDS_MAX_CHARS = 4096


@dataclass(frozen=True, slots=True)
class _Special:
    token_id: int
    lstrip: bool
    rstrip: bool
    single_word: bool


def _component_spec(component: Any) -> Any:
    """A tokenizer component's JSON description (what tokenizer.json holds for it)."""
    return None if component is None else json.loads(component.__getstate__())


def _without_first_prepend(pre_tokenizer: Any) -> Any | None:
    """The pre-tokenizer for text that does not start the prompt, or None if no different.

    Metaspace with prepend_scheme "first" adds the word-boundary symbol only to text at
    offset 0 of the whole input; everything else in a tokenizer works piece by piece. Text
    after a special token is therefore encoded with that prepend switched off.
    """
    changed = False

    def patch(node: Any) -> Any:
        nonlocal changed
        if isinstance(node, dict):
            out = {k: patch(v) for k, v in node.items()}
            if out.get("type") == "Metaspace" and out.get("prepend_scheme") == "first":
                out["prepend_scheme"] = "never"
                changed = True
            return out
        if isinstance(node, list):
            return [patch(v) for v in node]
        return node

    patched = patch(pre_tokenizer)
    return patched if changed else None


def _unmarked(text: str) -> str:
    return text


def mark_json(value: Any, mark: Callable[[str], str]) -> Any:
    """A JSON value with every string in it, object keys included, passed through `mark`."""
    if isinstance(value, str):
        return mark(value)
    if isinstance(value, dict):
        return {mark(k): mark_json(v, mark) for k, v in value.items()}
    if isinstance(value, list):
        return [mark_json(v, mark) for v in value]
    return value


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class SafeChatEncoder:
    """Renders a conversation with a tokenizer's chat template and encodes it safely."""

    def __init__(self, hf: PreTrainedTokenizerFast) -> None:
        self._template = ChatTemplate(hf)
        backend: Tokenizer = hf.backend_tokenizer
        spec_json = backend.to_str()
        # Private copies: `encode_special_tokens` is a mutable flag on the Rust tokenizer,
        # and flipping it on the shared one would race with other threads.
        self._head = Tokenizer.from_str(spec_json)
        self._head.encode_special_tokens = True
        self._rest = self._head
        rest_pre_tokenizer = _without_first_prepend(_component_spec(backend.pre_tokenizer))
        if rest_pre_tokenizer is not None:
            # Parsing the whole description is slow for big vocabularies; only tokenizers
            # converted from SentencePiece (32k-ish vocabularies) get here.
            spec = json.loads(spec_json)
            spec["pre_tokenizer"] = rest_pre_tokenizer
            self._rest = Tokenizer.from_str(json.dumps(spec))
            self._rest.encode_special_tokens = True
        # Keyed by the text and the tokenizer that encodes it (`at_start`: Metaspace's
        # "first" prepend applies at offset 0 only), so a hit is always what encoding that
        # text at that position gives; per encoder, so never another vocabulary's ids.
        self._cached_template_ids = functools.lru_cache(maxsize=TEMPLATE_IDS_CACHE_SIZE)(
            self._encode_template_text
        )
        self._specials: dict[str, _Special] = {
            tok.content: _Special(token_id, tok.lstrip, tok.rstrip, tok.single_word)
            for token_id, tok in backend.get_added_tokens_decoder().items()
            if tok.special and tok.content
        }
        # Longest first: Python's alternation is leftmost-first, the tokenizer's matcher
        # is leftmost-longest.
        alternatives = sorted(self._specials, key=len, reverse=True)
        self._special_re = (
            re.compile("|".join(re.escape(s) for s in alternatives)) if alternatives else None
        )

    @property
    def head_tokenizer(self) -> Tokenizer:
        """A tokenizer that encodes special-token strings as plain text (own copy)."""
        return self._head

    def encode(self, conversation: TemplateInput) -> list[int]:
        """The template's prompt for `conversation`, encoded so that no string the conversation
        builder passed through its `mark` argument can become a control token."""
        messages, tools = conversation(_unmarked)
        prompt = self._template.render(messages, tools)
        segments = self._marked_segments(conversation, prompt)
        return self._encode_segments(prompt, segments)

    def encode_text(self, text: str) -> list[int]:
        """Text encoded on its own, special-token strings kept as text. For a tokenizer
        converted from SentencePiece this is SentencePiece's encode: the word-boundary prefix
        always comes first (Metaspace's "first" leaves it out when the text starts with a
        space, so the space is written out here)."""
        if not text:
            return []
        if self._rest is self._head:
            return self._encode_text(text, at_start=True)
        return self._encode_text(" " + text, at_start=False)

    def special_token_id(self, content: str) -> int | None:
        """The id of the special (control) token spelled `content`, if the tokenizer has one."""
        special = self._specials.get(content)
        return None if special is None else special.token_id

    # -- rendering ---------------------------------------------------------------------

    def _marked_segments(self, conversation: TemplateInput, prompt: str) -> list[tuple[str, bool]]:
        """The prompt as (text, came_from_a_message) pieces, checked to add up to `prompt`."""
        free = [c for c in _MARKERS if c not in prompt]
        if len(free) < 2:
            raise ChatTemplateError("message content contains reserved Unicode noncharacters")
        open_, close = free[0], free[1]

        # First wrap whole strings. A template that trims content (Mistral's does for
        # assistant turns) moves whitespace across the markers, so then retry with the
        # markers inside the string's outer whitespace; that whitespace counts as template
        # text, which is harmless because whitespace cannot spell a special token. For the
        # same reason blank strings are left unmarked: templates may test them for truth.
        for trim_aware in (False, True):

            def mark(text: str, trim_aware: bool = trim_aware) -> str:
                if not text.strip():
                    return text
                if not trim_aware:
                    return open_ + text + close
                core = text.strip()
                start = len(text) - len(text.lstrip())
                return text[:start] + open_ + core + close + text[start + len(core) :]

            segments = self._split_marked(self._template.render(*conversation(mark)), open_, close)
            if segments is not None and "".join(t for t, _ in segments) == prompt:
                return segments
        raise RuntimeError(
            "the chat template changes message content in a way that cannot be tracked, so "
            "it cannot be encoded without the risk of control-token injection"
        )

    @staticmethod
    def _split_marked(marked: str, open_: str, close: str) -> list[tuple[str, bool]] | None:
        segments: list[tuple[str, bool]] = []
        pos = 0
        while True:
            start = marked.find(open_, pos)
            if start < 0:
                tail = marked[pos:]
                if close in tail:
                    return None
                segments.append((tail, False))
                return segments
            end = marked.find(close, start + 1)
            head = marked[pos:start]
            if end < 0 or close in head or open_ in marked[start + 1 : end]:
                return None  # the template cut or reordered content
            segments.append((head, False))
            segments.append((marked[start + 1 : end], True))
            pos = end + 1

    # -- encoding ----------------------------------------------------------------------

    def _template_specials(
        self, prompt: str, segments: list[tuple[str, bool]]
    ) -> list[tuple[int, int, _Special]]:
        """(start, end, token) of each special token that lies wholly in template text."""
        found: list[tuple[int, int, _Special]] = []
        if self._special_re is None:
            return found
        offset = 0
        for text, from_message in segments:
            if not from_message:
                for m in self._special_re.finditer(text):
                    special = self._specials[m.group()]
                    start, end = offset + m.start(), offset + m.end()
                    if special.single_word and (
                        (start > 0 and _is_word_char(prompt[start - 1]))
                        or (end < len(prompt) and _is_word_char(prompt[end]))
                    ):
                        continue
                    found.append((start, end, special))
            offset += len(text)
        return found

    def _encode_segments(self, prompt: str, segments: list[tuple[str, bool]]) -> list[int]:
        ids: list[int] = []
        message_spans = _message_spans(segments)
        next_span = 0  # the first message span that does not end before the current piece

        def encode(start: int, end: int) -> None:
            """Encodes prompt[start:end], a piece between special tokens."""
            nonlocal next_span
            while next_span < len(message_spans) and message_spans[next_span][1] <= start:
                next_span += 1
            text, at_start = prompt[start:end], start == 0
            if next_span < len(message_spans) and message_spans[next_span][0] < end:
                ids.extend(self._encode_text(text, at_start=at_start))
            else:
                ids.extend(self._template_text_ids(text, at_start))

        pos = 0
        for start, end, special in self._template_specials(prompt, segments):
            if start < pos:
                continue  # inside whitespace an rstrip token already swallowed
            if special.lstrip:  # the tokenizer swallows whitespace around such tokens
                while start > pos and prompt[start - 1].isspace():
                    start -= 1
            if start > pos:
                encode(pos, start)
            ids.append(special.token_id)
            pos = end
            if special.rstrip:
                while pos < len(prompt) and prompt[pos].isspace():
                    pos += 1
        if pos < len(prompt):
            encode(pos, len(prompt))
        return ids

    def _template_text_ids(self, text: str, at_start: bool) -> Sequence[int]:
        """The ids of a piece of pure template text, from the cache when it fits there."""
        if len(text) > TEMPLATE_IDS_MAX_CHARS:
            return self._encode_text(text, at_start=at_start)
        return self._cached_template_ids(text, at_start)

    def _encode_template_text(self, text: str, at_start: bool) -> tuple[int, ...]:
        # A tuple: cached ids are shared by every request and must not be mutable.
        return tuple(self._encode_text(text, at_start=at_start))

    def _encode_text(self, text: str, *, at_start: bool) -> list[int]:
        tokenizer = self._head if at_start else self._rest
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False).ids
        return ids


def _message_spans(segments: list[tuple[str, bool]]) -> list[tuple[int, int]]:
    """(start, end) in the prompt of each non-empty piece of message text, in order."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for text, from_message in segments:
        if from_message and text:
            spans.append((offset, offset + len(text)))
        offset += len(text)
    return spans
