"""Tool formats: how a model family sees tools, tool calls and tool results in its prompt, how it
writes calls, and what its call ids look like.

- "mistral" (Mistral v0.3): [AVAILABLE_TOOLS] / [TOOL_CALLS] / [TOOL_RESULTS] control tokens,
  token for token as mistral-common encodes them (see mistral_prompt.py), 9-alphanumeric ids.
- "qwen" (Qwen2.5 and any template that renders `tools` itself): the model's chat template with
  Hugging Face's tool arguments; calls are `<tool_call>\\n{json}\\n</tool_call>`.
- "generic" (a template without tools, like SmolLM2's): the tools described in the system
  turn, calls written as `<tool_call>{json}</tool_call>`, results sent back as a user turn of
  `<tool_response>...</tool_response>` blocks. README.md, "Models config", documents it.

Every call the model writes is `{"name": "<name>", "arguments": <JSON object>}` with
json.dumps spacing; `CallSyntax` says what surrounds it. The grammar (tool_grammar.py) and the
parser of the output (inference/tool_call_parser.py) are both built from that one description.
In every format, strings from the request reach the prompt only as text, never as control
tokens (chat_encoding.py marks them, or mistral_prompt.py encodes them as text).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from transformers import PreTrainedTokenizerFast

from inference.text.chat_encoding import SafeChatEncoder, TemplateArgs, TemplateInput, mark_json
from inference.text.messages import ChatMessage, FunctionTool
from inference.text.mistral_prompt import MistralControls, encode_mistral_v3

ToolFormatName = Literal["auto", "mistral", "qwen", "generic"]

# The call itself, the same in every format: CALL_OPEN name CALL_NAME_END arguments CALL_CLOSE.
CALL_OPEN = '{"name": "'
CALL_NAME_END = '", "arguments": '
CALL_CLOSE = "}"

_ALPHANUMERICS = string.ascii_letters + string.digits
_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")


@dataclass(frozen=True, slots=True)
class CallSyntax:
    """Where calls sit in the output: trigger, block_open, call (call_separator call)*,
    block_close. The trigger is text (`trigger`) or one control token (`trigger_token`)."""

    trigger: str
    trigger_token: int | None
    block_open: str
    block_close: str
    # Between calls of one block; None: a block holds one call (each call has its trigger).
    call_separator: str | None
    # Between blocks when the output must be calls only (tool_choice required).
    block_separator: str


def random_alphanumerics(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERICS) for _ in range(length))


def _mapped_alphanumerics(key: str, length: int) -> str:
    """`length` alphanumerics derived from `key`: the same key always gives the same id."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")
    out = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALPHANUMERICS))
        out.append(_ALPHANUMERICS[digit])
    return "".join(out)


class ToolFormat(ABC):
    name: str
    syntax: CallSyntax

    def new_call_id(self) -> str:
        """An id for a call the model just made (OpenAI's shape)."""
        return "call_" + random_alphanumerics(24)

    def history_call_id(self, call_id: str) -> str:
        """The id as the prompt shows it (the same for the same id, so a conversation stays
        consistent across requests)."""
        return call_id

    def prompt_ids(
        self,
        chat: SafeChatEncoder,
        messages: Sequence[ChatMessage],
        tools: Sequence[FunctionTool],
    ) -> list[int]:
        """The conversation and tools as the model's prompt, ending with the assistant cue."""
        return chat.encode(self.conversation(messages, tools))

    @abstractmethod
    def conversation(
        self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool]
    ) -> TemplateInput:
        """What the chat template renders for this conversation and these tools."""


def _tagged_calls(block_open: str, block_close: str) -> CallSyntax:
    """Calls each in its own <tool_call> block; blocks one per line where only calls may come."""
    return CallSyntax(
        trigger="<tool_call>",
        trigger_token=None,
        block_open=block_open,
        block_close=block_close,
        call_separator=None,
        block_separator="\n",
    )


def _template_message(message: ChatMessage, mark: Callable[[str], str]) -> dict[str, Any]:
    """A message in the shape Hugging Face chat templates take (OpenAI's, arguments parsed)."""
    out: dict[str, Any] = {"role": message.role, "content": mark(message.content)}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": mark(call.id),
                "type": "function",
                "function": {"name": mark(call.name), "arguments": mark_json(call.arguments, mark)},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = mark(message.tool_call_id)
        if message.name:
            out["name"] = mark(message.name)
    return out


def _tool_description(tool: FunctionTool, mark: Callable[[str], str]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": mark(tool.name)}
    if tool.description:
        function["description"] = mark(tool.description)
    function["parameters"] = mark_json(tool.parameters, mark)
    return function


def template_conversation(
    messages: Sequence[ChatMessage], tools: Sequence[FunctionTool]
) -> TemplateInput:
    """The conversation as a chat template with Hugging Face's tool support takes it."""

    def build(mark: Callable[[str], str]) -> TemplateArgs:
        shown_tools = [{"type": "function", "function": _tool_description(t, mark)} for t in tools]
        return [_template_message(m, mark) for m in messages], shown_tools or None

    return build


class TemplateToolFormat(ToolFormat):
    """The model's own template renders tools, calls and results (Qwen2.5's Hermes style)."""

    name = "qwen"
    syntax = _tagged_calls("\n", "\n</tool_call>")

    def conversation(
        self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool]
    ) -> TemplateInput:
        return template_conversation(messages, tools)


GENERIC_TOOLS_INTRO = (
    "You can call functions to help with the user's request. The functions, each with its "
    "parameters as a JSON Schema, are:\n<tools>\n"
)
GENERIC_TOOLS_OUTRO = (
    "\n</tools>\nTo call a function, reply with "
    '<tool_call>{"name": <function name>, "arguments": <arguments as a JSON object>}</tool_call> '
    "(one block per call). The results come back in <tool_response></tool_response> blocks."
)


class GenericToolFormat(ToolFormat):
    """For templates that know nothing of tools: everything is said in ordinary turns."""

    name = "generic"
    syntax = _tagged_calls("", "</tool_call>")

    def conversation(
        self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool]
    ) -> TemplateInput:
        def build(mark: Callable[[str], str]) -> TemplateArgs:
            return self.template_messages(messages, tools, mark), None

        return build

    @staticmethod
    def template_messages(
        messages: Sequence[ChatMessage],
        tools: Sequence[FunctionTool],
        mark: Callable[[str], str] = lambda text: text,
    ) -> list[dict[str, str]]:
        """The conversation as plain system/user/assistant turns."""
        out: list[dict[str, str]] = []
        if tools:
            listing = "\n".join(
                json.dumps(_tool_description(t, mark), ensure_ascii=False) for t in tools
            )
            described = GENERIC_TOOLS_INTRO + listing + GENERIC_TOOLS_OUTRO
            if messages and messages[0].role == "system":
                first = mark(messages[0].content)
                out.append({"role": "system", "content": f"{first}\n\n{described}"})
                messages = messages[1:]
            else:
                out.append({"role": "system", "content": described})
        after_tool = False
        for message in messages:
            if message.role == "tool":
                # A run of results is one user turn: templates without tools insist on
                # alternating turns.
                block = f"<tool_response>{mark(message.content)}</tool_response>"
                if after_tool:
                    out[-1]["content"] += "\n" + block
                else:
                    out.append({"role": "user", "content": block})
                after_tool = True
                continue
            after_tool = False
            content = mark(message.content)
            calls = "".join(
                "<tool_call>"
                + json.dumps(
                    {"name": mark(c.name), "arguments": mark_json(c.arguments, mark)},
                    ensure_ascii=False,
                )
                + "</tool_call>"
                for c in message.tool_calls
            )
            joined = f"{content}\n{calls}" if content and calls else content + calls
            out.append({"role": message.role, "content": joined})
        return out


class MistralToolFormat(ToolFormat):
    name = "mistral"

    def __init__(self, controls: MistralControls) -> None:
        self._controls = controls
        self.syntax = CallSyntax(
            trigger="[TOOL_CALLS]",
            trigger_token=controls.tool_calls,
            block_open=" [",
            block_close="]",
            call_separator=", ",
            block_separator="",
        )

    def new_call_id(self) -> str:
        return random_alphanumerics(9)

    def conversation(
        self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool]
    ) -> TemplateInput:
        """Plain chat only: the template's tool rendering is not mistral-common's."""
        return template_conversation(messages, ())

    def history_call_id(self, call_id: str) -> str:
        # Ids this server made are already valid and stay as they are; others (a client's
        # own, OpenAI's "call_...") get a stable 9-alphanumeric stand-in.
        return call_id if _MISTRAL_ID.fullmatch(call_id) else _mapped_alphanumerics(call_id, 9)

    def prompt_ids(
        self,
        chat: SafeChatEncoder,
        messages: Sequence[ChatMessage],
        tools: Sequence[FunctionTool],
    ) -> list[int]:
        if not tools and all(m.role != "tool" and not m.tool_calls for m in messages):
            # Plain chat keeps the template's encoding (which equals mistral-common's there).
            return chat.encode(self.conversation(messages, tools))
        return encode_mistral_v3(
            messages,
            tools,
            controls=self._controls,
            encode_text=chat.encode_text,
            call_id=self.history_call_id,
        )


def tool_format_for(
    name: ToolFormatName, hf: PreTrainedTokenizerFast, chat: SafeChatEncoder
) -> ToolFormat:
    """The named format; "auto" picks Mistral's for a vocabulary with its tool control tokens,
    the template's own for a template that renders `tools` and writes <tool_call>, else the
    generic one."""
    controls = MistralControls.find(chat.special_token_id)
    if name == "mistral" or (name == "auto" and controls is not None):
        if controls is None:
            raise ValueError("tool_format 'mistral' needs the Mistral v3 control tokens")
        return MistralToolFormat(controls)
    template = hf.chat_template if isinstance(hf.chat_template, str) else ""
    if name == "qwen" or (name == "auto" and "tools" in template and "<tool_call>" in template):
        return TemplateToolFormat()
    return GenericToolFormat()
