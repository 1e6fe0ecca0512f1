"""Mistral v0.3 prompts with tools, token for token as mistral-common's v3 encoder builds them.

The Hugging Face template of Mistral-7B-Instruct-v0.3 differs from mistral-common where tools
are involved (it pastes tool results and descriptions into the prompt without JSON quoting),
and mistral-common is the reference the model was trained with, so conversations with tools
are encoded here instead of by the template. Control tokens come from this code only; every
string from the request is encoded as text, so it can never become one.

Behaviour copied from mistral-common 1.13.1 (the version in the dev venv; `MistralTokenizer.v3()`):
- protocol/instruct/normalize.py:249-256: system messages joined with "\\n\\n" into one
  system prompt; :335-384: runs of consecutive same-role messages merged (user and assistant
  text joined with "\\n\\n", tool calls concatenated; tool messages stay one each; a system
  message ends a run), and an empty user message put first if the first is not a user one;
  :216-225: empty tool content and arguments count as "{}".
- tokens/tokenizers/instruct.py:193-268 (encode_instruct): BOS, then each message;
  :544-577 (V2 encode_user_message): [AVAILABLE_TOOLS] json(tools) [/AVAILABLE_TOOLS] before
  the last user message only, then [INST] text [/INST]; :370-371: the system prompt goes in
  front of the last user message's text; :638-687: assistant text right-stripped of spaces,
  or [TOOL_CALLS] json(calls), then EOS; :746-755 (V3): a call is {"name", "arguments", "id"};
  :757-788 (V3): a result is [TOOL_RESULTS] json({"content", "call_id"}) [/TOOL_RESULTS],
  content parsed as JSON when it is JSON (:581-596); :554: a tool is
  {"type": "function", "function": {"name", "description", "parameters"}}.
All JSON is `json.dumps(..., ensure_ascii=False)`; every text piece is encoded on its own
with SentencePiece's word-boundary prefix (`tokenizer.encode(text, bos=False, eos=False)`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.text.chat_template import ChatTemplateError
from inference.text.messages import ChatMessage, FunctionTool, ToolCall

SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class MistralControls:
    """The control-token ids of a Mistral v3 vocabulary."""

    bos: int
    eos: int
    inst: int
    end_inst: int
    tools: int
    end_tools: int
    tool_calls: int
    results: int
    end_results: int

    @classmethod
    def find(cls, special_id: Callable[[str], int | None]) -> MistralControls | None:
        """The controls looked up by their spelling; None unless the vocabulary has them all."""
        spellings = {
            "bos": "<s>",
            "eos": "</s>",
            "inst": "[INST]",
            "end_inst": "[/INST]",
            "tools": "[AVAILABLE_TOOLS]",
            "end_tools": "[/AVAILABLE_TOOLS]",
            "tool_calls": "[TOOL_CALLS]",
            "results": "[TOOL_RESULTS]",
            "end_results": "[/TOOL_RESULTS]",
        }
        ids = {field: special_id(text) for field, text in spellings.items()}
        if any(i is None for i in ids.values()):
            return None
        return cls(**ids)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Turn:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json_or_text(content: str) -> Any:
    """Tool content as mistral-common embeds it: parsed if it is JSON, else the string."""
    try:
        return json.loads(content or "{}")
    except json.JSONDecodeError:
        return content


def _merged_turns(messages: Sequence[ChatMessage]) -> list[_Turn]:
    turns: list[_Turn] = []
    run: list[ChatMessage] = []

    def close_run() -> None:
        if not run:
            return
        role = run[0].role
        if role == "tool":
            turns.extend(_Turn("tool", m.content, tool_call_id=m.tool_call_id) for m in run)
        elif role in ("user", "assistant"):
            text = SEPARATOR.join(m.content for m in run if m.content)
            calls = tuple(call for m in run for call in m.tool_calls)
            turns.append(_Turn(role, text, calls))
        run.clear()

    for message in messages:
        if run and run[0].role != message.role:
            close_run()
        run.append(message)
    close_run()
    if not turns or turns[0].role != "user":
        turns.insert(0, _Turn("user", ""))
    return turns


def encode_mistral_v3(
    messages: Sequence[ChatMessage],
    tools: Sequence[FunctionTool],
    *,
    controls: MistralControls,
    encode_text: Callable[[str], list[int]],
    call_id: Callable[[str], str],
) -> list[int]:
    """The prompt's token ids, ending where the assistant's answer begins.

    `call_id` maps a history call id to the 9-alphanumeric form the model knows.
    """
    system = SEPARATOR.join(m.content for m in messages if m.role == "system" and m.content)
    turns = _merged_turns(messages)
    last_user = max(i for i, t in enumerate(turns) if t.role == "user")
    c = controls
    ids = [c.bos]
    for i, turn in enumerate(turns):
        if turn.role == "user":
            if i == last_user and tools:
                ids += [c.tools, *encode_text(_dumps([_tool_json(t) for t in tools])), c.end_tools]
            text = (
                f"{system}{SEPARATOR}{turn.content}" if i == last_user and system else turn.content
            )
            ids += [c.inst, *encode_text(text), c.end_inst]
        elif turn.role == "assistant":
            # mistral-common refuses text and calls in one turn; the model writes text before
            # [TOOL_CALLS] when it answers that way, so such a turn is shown as it was written.
            if turn.content or not turn.tool_calls:
                ids += encode_text(turn.content.rstrip(" "))
            if turn.tool_calls:
                calls = [
                    {"name": call.name, "arguments": call.arguments, "id": call_id(call.id)}
                    for call in turn.tool_calls
                ]
                ids += [c.tool_calls, *encode_text(_dumps(calls))]
            ids.append(c.eos)
        elif turn.role == "tool":
            result = {"content": _json_or_text(turn.content), "call_id": call_id(turn.tool_call_id)}
            ids += [c.results, *encode_text(_dumps(result)), c.end_results]
        else:  # pragma: no cover - roles are validated before
            raise ChatTemplateError(f"unsupported role {turn.role!r}")
    return ids


def _tool_json(tool: FunctionTool) -> dict[str, Any]:
    function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
    return {"type": "function", "function": function}
