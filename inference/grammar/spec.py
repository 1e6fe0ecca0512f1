"""What to constrain an output to, before it is compiled for a model's tokenizer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

GrammarKind = Literal["json_object", "json_schema", "regex", "ebnf", "structural_tag"]
GRAMMAR_KINDS: tuple[GrammarKind, ...] = (
    "json_object",
    "json_schema",
    "regex",
    "ebnf",
    "structural_tag",
)


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A grammar in source form; `GrammarCompiler.compile` turns it into a `CompiledConstraint`.

    - json_object: any one JSON object (`source` is ignored, conventionally "").
    - json_schema: a JSON value valid against the JSON Schema in `source` (JSON text).
    - regex: text matching the regular expression in `source` (whole output).
    - ebnf: text of the EBNF grammar in `source` (xgrammar's GBNF-like dialect, root rule `root`).
    - structural_tag: xgrammar's structural tag, as JSON text (free text with triggers that
      switch to constrained sections, e.g. tool calls).
    """

    kind: GrammarKind
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in GRAMMAR_KINDS:
            raise ValueError(f"unknown grammar kind {self.kind!r}")

    @property
    def cache_key(self) -> tuple[str, str]:
        """(kind, sha256 of source): equal specs share one compiled grammar."""
        return self.kind, hashlib.sha256(self.source.encode()).hexdigest()
