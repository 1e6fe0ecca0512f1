"""Refuses JSON Schema keywords the grammar engine would silently not enforce.

xgrammar turns a schema into a grammar and skips what it cannot express: without this check a
schema with `uniqueItems` would compile and the output could still repeat items. Each rule below
was found by compiling a schema with the keyword and feeding xgrammar (0.2.9) an instance that
violates only that keyword: where the matcher accepted it, the keyword is refused here.
tests/unit/grammar/test_schema_policy.py replays those probes, so an xgrammar that changes
what it enforces fails that test (run it where the GPU image's xgrammar is installed too).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

# Keywords that constrain nothing (JSON Schema 2020-12 annotations and identifiers).
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
        "discriminator",  # OpenAPI's; pydantic emits it next to anyOf/oneOf
    }
)

# Accepted by xgrammar and not enforced: an instance violating only this keyword is accepted.
UNENFORCED = frozenset(
    {
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "not",
        "if",
        "then",
        "else",
        "oneOf",  # compiled as anyOf: a value matching two branches is accepted
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
    }
)

# String formats xgrammar enforces; others ("iri", "idn-email", "regex", custom ones) are
# compiled as plain strings.
ENFORCED_FORMATS = frozenset(
    {
        "email",
        "date",
        "time",
        "date-time",
        "duration",
        "uuid",
        "ipv4",
        "ipv6",
        "hostname",
        "uri",
        "uri-reference",
        "uri-template",
        "json-pointer",
        "relative-json-pointer",
    }
)

# A schema with one of these keywords is compiled from that keyword alone: xgrammar ignores
# the validation keywords next to it (e.g. `{"$ref": ..., "minimum": 3}` accepts 1).
_EXCLUSIVE = ("$ref", "anyOf", "allOf", "enum", "const")

# Where subschemas live: keyword -> how its value holds them.
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("prefixItems", "anyOf", "allOf", "oneOf")
_SUBSCHEMA_SINGLE = (
    "items",
    "additionalItems",
    "unevaluatedItems",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)


class UnenforceableSchemaError(ValueError):
    """The schema uses a keyword the grammar engine would not enforce."""

    def __init__(self, keyword: str, pointer: str, why: str) -> None:
        where = f" at {pointer}" if pointer else ""
        super().__init__(
            f"the JSON schema keyword {keyword!r}{where} cannot be enforced by the grammar "
            f"engine ({why}); remove it or express it with supported keywords"
        )
        self.keyword = keyword
        self.pointer = pointer


def check_enforceable(schema: Any) -> None:
    """Raise UnenforceableSchemaError for the first keyword the grammar would not enforce."""
    for pointer, node in _subschemas(schema, ""):
        _check_node(node, pointer)


def enforceable_form(schema: Any) -> Any:
    """The schema as it is compiled: string lengths rewritten as patterns (a copy).

    xgrammar (0.2.9) compiles minLength/maxLength into a character class that lets raw control
    characters through (`"a<NUL>"` is accepted for maxLength 6), which is not JSON. A pattern
    compiles as a JSON string regex that refuses them, so `.{min,max}` carries the length.
    """
    schema = copy.deepcopy(schema)
    for _pointer, node in _subschemas(schema, ""):
        # Next to a pattern or format the lengths are refused (check_enforceable).
        if ("minLength" in node or "maxLength" in node) and not (
            "pattern" in node or "format" in node
        ):
            low = int(node.pop("minLength", 0))
            high = node.pop("maxLength", None)
            node["pattern"] = f"^.{{{low},{'' if high is None else int(high)}}}$"
    return schema


def _check_node(node: dict[str, Any], pointer: str) -> None:
    for keyword in node:
        if keyword in UNENFORCED:
            raise UnenforceableSchemaError(keyword, pointer, "xgrammar does not check it")
    if "allOf" in node and isinstance(node["allOf"], list) and len(node["allOf"]) > 1:
        raise UnenforceableSchemaError("allOf", pointer, "only a single subschema is enforced")
    for length in ("minLength", "maxLength"):
        for other in ("pattern", "format"):
            if length in node and other in node:
                raise UnenforceableSchemaError(
                    length, pointer, f"xgrammar ignores it next to {other!r}"
                )
    fmt = node.get("format")
    if fmt is not None and fmt not in ENFORCED_FORMATS:
        raise UnenforceableSchemaError(
            "format", pointer, f"format {fmt!r} is not one xgrammar checks"
        )
    if "multipleOf" in node and not (
        node.get("type") == "integer" and isinstance(node["multipleOf"], int)
    ):
        raise UnenforceableSchemaError(
            "multipleOf", pointer, "only an integer multipleOf on type integer is enforced"
        )
    exclusive = next((k for k in _EXCLUSIVE if k in node), None)
    if exclusive is not None:
        _check_siblings(node, exclusive, pointer)


def _check_siblings(node: dict[str, Any], exclusive: str, pointer: str) -> None:
    allowed = ANNOTATIONS | {exclusive}
    if exclusive in ("enum", "const"):
        # pydantic writes {"enum": [...], "type": "string"}: harmless when every value has
        # that type, which is all that `type` could add.
        values = node[exclusive] if exclusive == "enum" else [node[exclusive]]
        if (
            "type" in node
            and isinstance(values, list)
            and all(_has_type(v, node["type"]) for v in values)
        ):
            allowed = allowed | {"type"}
    for keyword in node:
        if keyword not in allowed and keyword in _VALIDATION_KEYWORDS:
            raise UnenforceableSchemaError(
                keyword, pointer, f"xgrammar ignores it next to {exclusive!r}"
            )


def _has_type(value: Any, types: Any) -> bool:
    names = types if isinstance(types, list) else [types]
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return any(name in checks and checks[name](value) for name in names)


# Keywords that constrain a value (JSON Schema 2020-12 validation and applicators); other
# unknown keys ("x-...", "strict") constrain nothing in JSON Schema either.
_VALIDATION_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "format",
        "maxItems",
        "minItems",
        "maxProperties",
        "minProperties",
        "required",
        *_SUBSCHEMA_MAPS,
        *_SUBSCHEMA_LISTS,
        *_SUBSCHEMA_SINGLE,
        *UNENFORCED,
        "$ref",
    }
) - {"$defs", "definitions"}


def _subschemas(node: Any, pointer: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in `node`, with its JSON pointer (booleans have no keywords)."""
    if not isinstance(node, dict):
        return
    yield pointer, node
    for keyword in _SUBSCHEMA_MAPS:
        children = node.get(keyword)
        if isinstance(children, dict):
            for name, child in children.items():
                yield from _subschemas(child, f"{pointer}/{keyword}/{_escape(name)}")
    for keyword in _SUBSCHEMA_LISTS:
        children = node.get(keyword)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield from _subschemas(child, f"{pointer}/{keyword}/{i}")
    for keyword in _SUBSCHEMA_SINGLE:
        if keyword in node:
            yield from _subschemas(node[keyword], f"{pointer}/{keyword}")


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
