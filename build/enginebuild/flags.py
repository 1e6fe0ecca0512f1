"""The TensorRT-LLM 1.2.1 command-line flags we may pass, with their allowed values, and a checker.

Every command the planner emits is validated against the scripts' own argparse definitions,
recorded as data in `trtllm_1_2_1_flags.yaml` next to this module (each script with the file and
commit it was read from), so a typo or a value the pinned release would reject fails in a unit
test instead of an hour into a GPU build. This module is the one reader of that record.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

FLAGS_RECORD = Path(__file__).resolve().parent / "trtllm_1_2_1_flags.yaml"


class Kind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    STR = "str"
    PATH = "path"
    CHOICE = "choice"
    SWITCH = "switch"  # store_true: takes no value


@dataclass(frozen=True)
class Flag:
    kind: Kind
    choices: tuple[str, ...] = ()
    # argparse's default as the command line would spell it ("disable" for a plugin's None);
    # None when argparse's default is None or an expression this record does not evaluate.
    default: str | None = None
    # "?": the value may be left out; "+": one or more values follow.
    nargs: str | None = None
    # Accepted by the release but deprecated there: our plans must not use it.
    deprecated: str = ""
    # A PluginConfig field (trtllm-build): its built value is in config.json's plugin_config.
    plugin: bool = False


@dataclass(frozen=True)
class ScriptRecord:
    """One script's flags and where they were read."""

    key: str  # "trtllm-build" or the example script's path in the repository
    source: str  # "file@commit (where)", for messages and docs
    flags: Mapping[str, Flag]


def _flag(spec: Mapping[str, Any]) -> Flag:
    default = spec.get("default")
    return Flag(
        kind=Kind(spec["type"]),
        choices=tuple(str(c) for c in spec.get("choices", ())),
        default=None if default is None else str(default),
        nargs=spec.get("nargs"),
        deprecated=str(spec.get("deprecated", "")),
        plugin=bool(spec.get("plugin", False)),
    )


@cache
def load_record(path: Path = FLAGS_RECORD) -> Mapping[str, ScriptRecord]:
    """Parse the flag record; aliases point at the same Flag as the option they spell."""
    raw = yaml.safe_load(path.read_text())
    records: dict[str, ScriptRecord] = {}
    for key, script in raw["scripts"].items():
        specs: Mapping[str, Mapping[str, Any]] = script["flags"]
        table = {name: _flag(spec) for name, spec in specs.items() if "alias_of" not in spec}
        for name, spec in specs.items():
            if "alias_of" in spec:
                table[name] = table[spec["alias_of"]]
        source = f"{script['file']}@{str(script['commit'])[:7]} ({script['at']})"
        records[key] = ScriptRecord(key=key, source=source, flags=table)
    return records


# The executables the plan calls. The builder image puts the three example-script wrappers on
# PATH (see build/Dockerfile); trtllm-build is the wheel's own script.
TRTLLM_BUILD = "trtllm-build"
QUANTIZE = "tensorchat-quantize"
CONVERT_LLAMA = "tensorchat-convert-llama"
CONVERT_QWEN = "tensorchat-convert-qwen"

# What each wrapper runs inside the builder image (examples pinned to the v1.2.1 tag).
TOOL_SCRIPTS: Mapping[str, str] = {
    QUANTIZE: "examples/quantization/quantize.py",
    CONVERT_LLAMA: "examples/models/core/llama/convert_checkpoint.py",
    CONVERT_QWEN: "examples/models/core/qwen/convert_checkpoint.py",
}

TOOL_FLAGS: Mapping[str, Mapping[str, Flag]] = {
    tool: load_record()[TOOL_SCRIPTS.get(tool, tool)].flags
    for tool in (TRTLLM_BUILD, QUANTIZE, CONVERT_LLAMA, CONVERT_QWEN)
}
TRTLLM_BUILD_FLAGS = TOOL_FLAGS[TRTLLM_BUILD]


def parse_flags(args: Sequence[str], table: Mapping[str, Flag]) -> tuple[dict[str, str], list[str]]:
    """Split `--flag value` / `--switch` args using the table; returns (flags, problems).

    Switches map to "" in the result, nargs="+" values are joined by spaces. Every problem names
    the flag and what is wrong.
    """
    flags: dict[str, str] = {}
    problems: list[str] = []
    i = 0
    while i < len(args):
        name = args[i]
        spec = table.get(name)
        i += 1
        if spec is None:
            problems.append(f"{name}: not a flag of this tool in TensorRT-LLM 1.2.1")
            continue
        if name in flags:
            problems.append(f"{name}: given twice")
        if spec.deprecated:
            problems.append(f"{name}: deprecated in 1.2.1 ({spec.deprecated})")
        values: list[str] = []
        while i < len(args) and not args[i].startswith("-") and spec.kind is not Kind.SWITCH:
            values.append(args[i])
            i += 1
            if spec.nargs != "+":
                break
        if spec.kind is not Kind.SWITCH and not values and spec.nargs != "?":
            problems.append(f"{name}: needs a value")
            continue
        for value in values:
            problems.extend(_check_value(name, spec, value))
        flags[name] = " ".join(values)
    return flags, problems


def _check_value(name: str, spec: Flag, value: str) -> list[str]:
    if spec.kind is Kind.CHOICE and value not in spec.choices:
        return [f"{name}: {value!r} is not one of {', '.join(spec.choices)}"]
    if spec.kind is Kind.INT:
        try:
            number = int(value)
        except ValueError:
            return [f"{name}: {value!r} is not an integer"]
        # argparse takes any integer; no size, count or length of ours is ever below 1.
        if number <= 0:
            return [f"{name}: {value} must be positive"]
    if spec.kind is Kind.FLOAT:
        try:
            float(value)
        except ValueError:
            return [f"{name}: {value!r} is not a number"]
    if spec.kind is Kind.PATH and not value:
        return [f"{name}: empty path"]
    return []


def validate_command(argv: Sequence[str]) -> list[str]:
    """Problems with one planned command line (tool name first); empty when valid for 1.2.1."""
    if not argv:
        return ["empty command"]
    table = TOOL_FLAGS.get(argv[0])
    if table is None:
        return [f"{argv[0]}: not a TensorRT-LLM tool this pipeline knows"]
    return parse_flags(argv[1:], table)[1]
