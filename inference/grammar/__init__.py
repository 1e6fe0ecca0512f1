"""Constrained decoding: grammars (JSON, JSON Schema, regex, EBNF, structural tags) compiled
for a model's tokenizer, and the per-sequence matchers the engines apply at every step."""

from inference.grammar.compiler import ConstraintError, GrammarCompiler
from inference.grammar.constraint import CompiledConstraint, Guide, SequenceMatcher, apply_bitmask
from inference.grammar.spec import GRAMMAR_KINDS, GrammarKind, GrammarSpec

__all__ = [
    "GRAMMAR_KINDS",
    "CompiledConstraint",
    "ConstraintError",
    "GrammarCompiler",
    "GrammarKind",
    "GrammarSpec",
    "Guide",
    "SequenceMatcher",
    "apply_bitmask",
]
