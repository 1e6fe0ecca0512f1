"""What trtllm-build 1.2.1 refuses or silently changes, applied to one build's flags and facts.

The rules are data (`trtllm_1_2_1_rules.yaml`, each with the source function it copies); this
module is their one interpreter. Target validation uses it to refuse a recipe that would not
build, or would build something other than it says; the tests' stand-in trtllm-build uses it to
behave as the release does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from enginebuild.flags import TRTLLM_BUILD_FLAGS

RULES_RECORD = Path(__file__).resolve().parent / "trtllm_1_2_1_rules.yaml"

# The QuantAlgo names ModelOpt (quantize.py) writes into the checkpoint's config.json for each
# of our precisions; trtllm-build reads them back from there (None: not quantized).
WEIGHT_QUANT_ALGO: Mapping[str, str | None] = {
    "fp8": "FP8",
    "int8_wo": "W8A16",
    "int4_awq": "W4A16_AWQ",
    "bf16": None,
}
KV_CACHE_QUANT_ALGO: Mapping[str, str | None] = {"fp8": "FP8", "int8": "INT8", "bf16": None}
# The TensorRT-LLM architecture each converter family produces.
ARCHITECTURE = {"llama": "LlamaForCausalLM", "qwen": "Qwen2ForCausalLM"}


@dataclass(frozen=True)
class BuildFacts:
    """What trtllm-build knows besides its flags: the checkpoint and the GPU it runs on."""

    quant_algo: str | None
    kv_cache_quant_algo: str | None
    sm: int  # the build machine's get_sm_version(), e.g. 89 for compute capability 8.9
    architecture: str
    tp_size: int = 1


@dataclass(frozen=True)
class Rule:
    id: str
    at: str
    when: tuple[Mapping[str, Any], ...]
    message: str
    refuse: str | None = None  # the exception trtllm-build raises
    sets: Mapping[str, str] | None = None  # the flags it overrides instead

    @property
    def source(self) -> str:
        return f"{self.at}; rule {self.id} in {RULES_RECORD.name}"


@dataclass(frozen=True)
class Refusal:
    rule: Rule
    message: str  # the release's message with the values filled in

    def describe(self) -> str:
        text = f": {self.message}" if self.message else " (a bare assert)"
        return f"trtllm-build 1.2.1 refuses it with {self.rule.refuse}{text} [{self.rule.source}]"


@dataclass(frozen=True)
class Override:
    rule: Rule
    flag: str
    asked: str
    built: str

    def describe(self) -> str:
        return (
            f"trtllm-build 1.2.1 builds {self.flag} {self.built}, not {self.asked}: "
            f'"{self.rule.message}" [{self.rule.source}]'
        )


@dataclass(frozen=True)
class Outcome:
    """What trtllm-build does with one command: refusals, or the flags it really builds."""

    flags: Mapping[str, str]  # every flag of the record with a value: given, default or overridden
    refusals: tuple[Refusal, ...]
    overrides: tuple[Override, ...]


@cache
def load_rules(path: Path = RULES_RECORD) -> tuple[Rule, ...]:
    raw = yaml.safe_load(path.read_text())
    return tuple(
        Rule(
            id=r["id"],
            at=r["at"],
            when=tuple(r["when"]),
            message=r["message"],
            refuse=r.get("refuse"),
            sets={k: str(v) for k, v in r["set"].items()} if "set" in r else None,
        )
        for r in raw["rules"]
    )


def effective_flags(given: Mapping[str, str]) -> dict[str, str]:
    """The given trtllm-build flags plus the record's default of every flag left out."""
    flags = {
        name: flag.default for name, flag in TRTLLM_BUILD_FLAGS.items() if flag.default is not None
    }
    for name, flag in TRTLLM_BUILD_FLAGS.items():
        if flag.plugin and name not in flags and any(c == "disable" for c in flag.choices):
            flags[name] = "disable"  # a plugin's None default is spelled "disable"
    flags.update(given)
    return flags


def _fact(name: str, flags: Mapping[str, str], facts: BuildFacts) -> object:
    if name.startswith("--"):
        return flags.get(name)
    return getattr(facts, name)


def _holds(test: Mapping[str, Any], given: Mapping[str, str], flags: Mapping[str, str],
           facts: BuildFacts) -> bool:  # fmt: skip
    name = test["fact"]
    if "given" in test:
        return (name in given) == bool(test["given"])
    value = _fact(name, flags, facts)
    if "is" in test:
        return value in test["is"]
    if "not" in test:
        return value not in test["not"]
    number = float(value)  # type: ignore[arg-type]
    if "below" in test:
        return number < test["below"]
    return number >= test["at_least"]


def apply_rules(given: Mapping[str, str], facts: BuildFacts) -> Outcome:
    """Run every rule in order on the flags as the rules before it left them."""
    flags = effective_flags(given)
    refusals: list[Refusal] = []
    overrides: list[Override] = []
    for rule in load_rules():
        if not all(_holds(test, given, flags, facts) for test in rule.when):
            continue
        if rule.refuse is not None:
            message = rule.message
            for name, value in flags.items():
                message = message.replace("{" + name + "}", value)
            refusals.append(Refusal(rule, message))
            continue
        for name, value in (rule.sets or {}).items():
            if flags.get(name) != value:
                overrides.append(Override(rule, name, flags.get(name, ""), value))
            flags[name] = value
    return Outcome(flags=flags, refusals=tuple(refusals), overrides=tuple(overrides))


def sm_of(compute_capability: str) -> int:
    """get_sm_version()'s number for a compute capability string: "8.9" -> 89."""
    major, minor = compute_capability.split(".")
    return int(major) * 10 + int(minor)
