"""The text layer: chat templates with injection-safe encoding, detokenization, stop strings."""

from inference.text.chat_template import ChatTemplateError
from inference.text.detokenizer import IncrementalDetokenizer
from inference.text.messages import ChatMessage, FunctionTool, ToolCall
from inference.text.stop import StopMatcher
from inference.text.tokenizer import ModelTokenizer

__all__ = [
    "ChatMessage",
    "ChatTemplateError",
    "FunctionTool",
    "IncrementalDetokenizer",
    "ModelTokenizer",
    "StopMatcher",
    "ToolCall",
]
