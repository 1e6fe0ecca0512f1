"""A model's chat template rendered exactly as transformers' `apply_chat_template` renders it,
without that method's per-call overhead.

`apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)` picks
the template (`get_chat_template`), normalises and deep-copies the conversation and tools into
plain JSON data, reads `special_tokens_map`, then renders the template it compiled and cached
(`_compile_jinja_template`, an `ImmutableSandboxedEnvironment` with transformers' globals and
filters: `raise_exception`, `strftime_now`, `tojson`, ...) with
`messages, tools, documents=None, add_generation_prompt=True, **special_tokens_map`. For the
requests the service renders, the normalisation changes nothing (`TemplateArgs` are plain JSON
dicts and lists without None-valued message keys or reasoning fields) and the sandbox cannot
mutate its inputs, so rendering that same compiled template with the same variables gives the
same string, at about half the cost: 11.7 instead of 25.1 µs per render of the default model's
template (one message, timeit), and the encoder renders twice per request: 138.7 -> 108.4 CPU
µs per encode (benchmarks/chat_encoding.py, issue 20). tests/unit/text/test_chat_template.py
checks the equality on every real template of the tests.

`Template.render` also builds the template's context from its globals on every call, a
ChainMap (the template's own over the environment's) that it copies twice, key by key, in
Python: 4.4 of the 11.9 µs of a render. The globals are fixed once transformers compiled the
template, so they are copied into a dict once, and each render hands Jinja a context that
already holds them (`new_context(shared=True)`): 11.9 -> 6.2 µs per render (timeit), 65.5 ->
53.2 µs per encode (benchmarks/chat_encoding.py --baseline, issue 20).
"""

from __future__ import annotations

from typing import Any

import jinja2
from transformers import PreTrainedTokenizerFast

# The very function apply_chat_template compiles with (an lru_cache keyed by the template
# text), so both render one compiled template; private, hence the equality test above.
from transformers.utils.chat_template_utils import _compile_jinja_template


class ChatTemplateError(ValueError):
    """The conversation is not one this model's chat template accepts (message is user-facing)."""


class ChatTemplate:
    """Renders `messages` (and `tools`) with a generation prompt, as apply_chat_template does."""

    def __init__(self, hf: PreTrainedTokenizerFast) -> None:
        self._hf = hf
        # By whether tools are given (a tokenizer may carry a dict of templates, one for
        # tools): the compiled template and the variables every render passes it, fixed once
        # it serves (its globals, transformers' helpers: raise_exception, ...; the constant
        # arguments; the special tokens), merged once; `render` adds the conversation.
        self._templates: dict[bool, tuple[jinja2.Template, dict[str, Any]]] = {}

    def render(self, messages: list[dict[str, Any]], tools: list[Any] | None) -> str:
        template = self._templates.get(tools is not None)
        if template is None:
            template = self._compile(tools)
        compiled, fixed = template
        # What `compiled.render(messages=..., ...)` does, without copying the globals' ChainMap:
        # the context's data is the globals overlaid with the variables, as Jinja makes it.
        data = {**fixed, "messages": messages, "tools": tools}
        environment = compiled.environment
        try:
            try:
                # The sandbox's concat is "".join: a str.
                return environment.concat(  # type: ignore[attr-defined,no-any-return]
                    compiled.root_render_func(compiled.new_context(data, shared=True))
                )
            except Exception:
                environment.handle_exception()  # as `render`: the template's own traceback
        except jinja2.TemplateError as e:
            # Templates reject conversations with raise_exception(...), whose text is meant
            # for the caller ("conversation roles must alternate ...").
            raise ChatTemplateError(str(e)) from e

    def _compile(self, tools: list[Any] | None) -> tuple[jinja2.Template, dict[str, Any]]:
        if not self._hf.chat_template:
            raise ChatTemplateError("this model has no chat template; send a prompt instead")
        compiled: jinja2.Template = _compile_jinja_template(self._hf.get_chat_template(None, tools))
        # apply_chat_template's fixed arguments and special tokens override the globals, as in
        # `render(messages=..., tools=..., documents=None, add_generation_prompt=True, **map)`.
        fixed = {
            **compiled.globals,
            "documents": None,
            "add_generation_prompt": True,
            **self._hf.special_tokens_map,
        }
        # One entry, stored whole: a preparation thread that finds it finds both parts.
        template = self._templates[tools is not None] = (compiled, fixed)
        return template
