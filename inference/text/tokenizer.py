"""A model's tokenizer, chat template and end-of-sequence ids, loaded from a checkpoint dir."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from inference.text.chat_encoding import SafeChatEncoder
from inference.text.chat_template import ChatTemplateError
from inference.text.detokenizer import IncrementalDetokenizer, byte_fallback_ids
from inference.text.messages import CHAT_ROLES, ChatMessage, FunctionTool
from inference.text.token_bytes import TokenBytes
from inference.text.tool_format import ToolFormat, ToolFormatName, tool_format_for

__all__ = ["ChatTemplateError", "ModelTokenizer"]


def _generation_eos_ids(path: Path) -> set[int]:
    """eos_token_id from generation_config.json: an int, a list, or absent."""
    config = path / "generation_config.json"
    if not config.is_file():
        return set()
    value = json.loads(config.read_text(encoding="utf-8")).get("eos_token_id")
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


class ModelTokenizer:
    """A model's tokenizer, chat template and end-of-sequence ids, loaded from a HF checkpoint dir.

    Thread-safe after construction: encoding and decoding only read shared state, but for
    the chat encoder's cache of template-text ids (an lru_cache, which is thread-safe) and the
    chat template's compiled entries, filled on first use (a race there compiles one twice).
    """

    def __init__(
        self,
        hf: PreTrainedTokenizerFast,
        eos_token_ids: frozenset[int],
        tool_format: ToolFormatName = "auto",
    ) -> None:
        self.hf = hf
        self.eos_token_ids = eos_token_ids
        self.vocab_size = len(hf)
        self._chat = SafeChatEncoder(hf)
        self.tool_format: ToolFormat = tool_format_for(tool_format, hf, self._chat)
        self._token_bytes = TokenBytes(hf.backend_tokenizer)
        backend = hf.backend_tokenizer
        self._byte_ids = byte_fallback_ids(backend)
        self._special_ids = frozenset(
            i for i, t in backend.get_added_tokens_decoder().items() if t.special
        )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, tool_format: ToolFormatName = "auto"
    ) -> ModelTokenizer:
        """Loads tokenizer.json, tokenizer_config.json and generation_config.json from `path`."""
        path = Path(path)
        # Local files only: a serving process must never reach for a model hub.
        hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if not isinstance(hf, PreTrainedTokenizerFast):
            raise ValueError(f"{path}: needs a fast (tokenizer.json) tokenizer, got {type(hf)}")
        eos = _generation_eos_ids(path)
        if hf.eos_token_id is not None:
            eos.add(int(hf.eos_token_id))
        return cls(hf, frozenset(eos), tool_format)

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool] = ()
    ) -> list[int]:
        """The conversation (and the tools the model may call) in the model's chat template
        and tool format, with a generation prompt, encoded so that no text from the request
        can become a control token. Raises ChatTemplateError for conversations the template
        rejects and for unknown roles."""
        if not messages:
            raise ChatTemplateError("messages must contain at least one message")
        for i, message in enumerate(messages):
            if message.role not in CHAT_ROLES:
                raise ChatTemplateError(
                    f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}; "
                    f"got {message.role!r}"
                )
        return self.tool_format.prompt_ids(self._chat, messages, tools)

    def encode_prompt(self, text: str) -> list[int]:
        """Raw text, special-token strings kept as text; BOS iff the tokenizer adds one."""
        ids: list[int] = self._chat.head_tokenizer.encode(text, add_special_tokens=True).ids
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (b"" for ids the tokenizer does not have)."""
        return self._token_bytes(token_id)

    def token_text(self, token_id: int) -> str:
        """The token's bytes decoded on their own, invalid UTF-8 replaced by U+FFFD."""
        return self._token_bytes(token_id).decode("utf-8", errors="replace")

    def new_detokenizer(self, context: Sequence[int] = ()) -> IncrementalDetokenizer:
        """A fresh detokenizer for one generated sequence (cheap: call once per choice);
        `context`: the ids it continues, for a raw prompt (see IncrementalDetokenizer)."""
        return IncrementalDetokenizer(
            self.hf.backend_tokenizer, self._byte_ids, self._special_ids, context
        )
