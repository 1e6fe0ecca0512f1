"""Compiles `GrammarSpec`s for one model's tokenizer: cached, bounded in time, off the event loop.

One `GrammarCompiler` per served model, built at load (building xgrammar's view of a 150k-token
vocabulary takes about a second). `compile` refuses what cannot be enforced before compiling
(`schema_policy`), compiles in a small worker pool so the event loop and the engines' batches
never wait for it, and gives up after `timeout_s` with a clear error; a compile that outlived
its request still finishes in the background and is cached for the next one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from inference.grammar.constraint import JSON_OBJECT_SCHEMA, CompiledConstraint, Guide
from inference.grammar.schema_policy import (
    UnenforceableSchemaError,
    check_enforceable,
    enforceable_form,
)
from inference.grammar.spec import GrammarSpec

if TYPE_CHECKING:
    import xgrammar
    from transformers import PreTrainedTokenizerBase

DEFAULT_CACHE_SIZE = 256
DEFAULT_TIMEOUT_S = 10.0
# Compiles run at most this many at a time: a pathological grammar occupies one worker until
# it finishes (a native compile cannot be interrupted), never the whole machine.
_WORKERS = 2
# xgrammar's C++ errors start with "[hh:mm:ss] /path/file.cc:line: ".
_NATIVE_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


class ConstraintError(ValueError):
    """The constraint cannot be served: invalid source, unenforceable keyword, or too slow."""

    def __init__(self, message: str, *, keyword: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword


class GrammarCompiler:
    """Turns `GrammarSpec`s into `CompiledConstraint`s for one tokenizer and vocabulary.

    `vocab_size` is the width of the model's logits (embedding rows, padding included), which
    may exceed the tokenizer's; `stop_token_ids` are the tokens that end a sequence: once the
    grammar is complete, they are the only ones allowed.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        vocab_size: int,
        stop_token_ids: Iterable[int],
        cache_size: int = DEFAULT_CACHE_SIZE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        import xgrammar

        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        stops = sorted(set(stop_token_ids))
        self.vocab_size = vocab_size
        self.timeout_s = timeout_s
        self.tokenizer_info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stops or None
        )
        # xgrammar's own cache is off: ours holds the compiled grammars once, by spec.
        self._compiler = xgrammar.GrammarCompiler(
            self.tokenizer_info, max_threads=_WORKERS, cache_enabled=False
        )
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], CompiledConstraint] = OrderedDict()
        self._pending: dict[tuple[str, str], concurrent.futures.Future[CompiledConstraint]] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(_WORKERS, "grammar-compile")
        self.hits = 0  # compiles answered from the cache
        self.misses = 0

    async def compile(self, spec: GrammarSpec) -> CompiledConstraint:
        """The compiled grammar; ConstraintError for a bad or unenforceable spec, or a timeout."""
        cached = self._lookup(spec)
        if cached is not None:
            return cached
        _check(spec)
        future = self._submit(spec)
        try:
            # shield: a timeout abandons the wait, not the compile (which is cached when done).
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self.timeout_s
            )
        except TimeoutError:
            raise ConstraintError(
                f"compiling the {spec.kind} grammar took longer than {self.timeout_s:g}s; "
                "use a simpler one"
            ) from None

    def cached(self, spec: GrammarSpec) -> bool:
        with self._lock:
            return spec.cache_key in self._cache

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _lookup(self, spec: GrammarSpec) -> CompiledConstraint | None:
        key = spec.cache_key
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            return found

    def _submit(self, spec: GrammarSpec) -> concurrent.futures.Future[CompiledConstraint]:
        key = spec.cache_key
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None:  # the same grammar is compiling for another request
                return pending
            self.misses += 1
            future = self._pool.submit(self._compile_and_cache, spec)
            self._pending[key] = future
            return future

    def _compile_and_cache(self, spec: GrammarSpec) -> CompiledConstraint:
        key = spec.cache_key
        try:
            grammar, guide = self._compile_now(spec)
            compiled = CompiledConstraint(spec, grammar, self.vocab_size, guide)
        except Exception as error:
            raise ConstraintError(_native_message(error)) from None
        finally:
            with self._lock:
                self._pending.pop(key, None)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _compile_now(self, spec: GrammarSpec) -> tuple[xgrammar.CompiledGrammar, Guide]:
        """The native compile (in a worker thread), and the executor's guide for the same grammar.

        JSON is compact (", " and ": " between items, no other whitespace): xgrammar's default
        allows any whitespace anywhere, where a weak or random model can loop until max_tokens
        (vLLM's --disable-any-whitespace exists for that). Strict mode (no properties or items
        the schema does not declare) is xgrammar's default, which TensorRT-LLM uses too. The
        executor gets the converted grammar as EBNF so both engines enforce the same one
        (TensorRT-LLM's own JSON_SCHEMA guide would compile with any whitespace:
        cpp/tensorrt_llm/batch_manager/guidedDecoder.cpp, GuidedDecoder::build L104-109,
        commit 2a9abd95).
        """
        compiler = self._compiler
        if spec.kind in ("json_object", "json_schema"):
            schema = JSON_OBJECT_SCHEMA if spec.kind == "json_object" else spec.source
            grammar = compact_json_grammar(json.loads(schema))
            return compiler.compile_grammar(grammar), Guide("EBNF_GRAMMAR", str(grammar))
        if spec.kind == "regex":
            return compiler.compile_regex(spec.source), Guide("REGEX", spec.source)
        if spec.kind == "ebnf":
            return compiler.compile_grammar(spec.source), Guide("EBNF_GRAMMAR", spec.source)
        # A structural tag's JSON sections (tool call arguments) are compact too: each becomes
        # the same grammar as a json_schema spec, in a "grammar" section.
        source = json.dumps(_compact_sections(json.loads(spec.source)))
        return compiler.compile_structural_tag(source), Guide("STRUCTURAL_TAG", source)


def compact_json_grammar(schema: Any) -> xgrammar.Grammar:
    """The grammar of JSON valid against `schema`, written compact (see `_compile_now`)."""
    import xgrammar

    return xgrammar.Grammar.from_json_schema(
        json.dumps(enforceable_form(schema)), any_whitespace=False
    )


# The keys of a structural tag under which formats nest (xgrammar's StructuralTag: "format";
# TagFormat: "content"; SequenceFormat and OrFormat: "elements"; the tag lists: "tags").
_NESTED_FORMATS = ("format", "content", "elements", "tags")


def _compact_sections(node: Any) -> Any:
    """The structural tag with each "json_schema" format replaced by a "grammar" format of its
    compact JSON grammar: xgrammar compiles a json_schema section with any whitespace (v0.1.32
    cpp/structural_tag.cc:816 calls JSONSchemaToEBNF with its defaults; 0.2.9 likewise), and a
    "grammar" section is parsed by both the torch engine's and the executor's xgrammar."""
    if isinstance(node, list):
        return [_compact_sections(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "json_schema" and node.get("style", "json") == "json":
        return {"type": "grammar", "grammar": str(compact_json_grammar(node["json_schema"]))}
    return {
        key: _compact_sections(value) if key in _NESTED_FORMATS else value
        for key, value in node.items()
    }


def _check(spec: GrammarSpec) -> None:
    """Refusals that need no compile: unparsable or unenforceable schemas, empty sources."""
    if spec.kind == "json_object":
        return
    if not spec.source.strip():
        raise ConstraintError(f"the {spec.kind} source is empty")
    if spec.kind != "json_schema":
        return
    schema = _parse_json(spec.source)
    if not isinstance(schema, dict | bool):
        raise ConstraintError("the JSON schema must be a JSON object")
    try:
        check_enforceable(schema)
    except UnenforceableSchemaError as error:
        raise ConstraintError(str(error), keyword=error.keyword) from None


def _parse_json(source: str) -> Any:
    try:
        return json.loads(source)
    except ValueError as error:
        raise ConstraintError(f"the JSON schema is not valid JSON: {error}") from None


def _native_message(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"invalid grammar: {_NATIVE_PREFIX.sub('', text)}"
