"""What an engine's config.json says was built, in trtllm-build's command-line spelling.

trtllm-build 1.2.1 overrides some plugin flags silently (trtllm_1_2_1_rules.yaml), so the truth
about a built engine is its config.json: `build_config.plugin_config` is PluginConfig dumped by
pydantic (builder.py Engine.save / BuildConfig.to_dict: features as true/false, plugins as a
dtype string or null for disabled).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from enginebuild.flags import TRTLLM_BUILD_FLAGS


def as_flag_value(value: object) -> str:
    """A plugin_config value as the command line spells it: true -> enable, null -> disable."""
    if value is True:
        return "enable"
    if value is False or value is None:
        return "disable"
    return str(value)


def built_plugin_flags(config: Mapping[str, Any]) -> dict[str, str]:
    """Every trtllm-build plugin flag whose value config.json records, as `--name: value`."""
    plugin_config = config.get("build_config", {}).get("plugin_config", {})
    return {
        name: as_flag_value(plugin_config[name[2:]])
        for name, flag in TRTLLM_BUILD_FLAGS.items()
        if flag.plugin and name[2:] in plugin_config
    }


def flags_as_built(
    planned: Mapping[str, str], config: Mapping[str, Any]
) -> tuple[dict[str, str], list[str]]:
    """The planned flags with config.json's value for each plugin flag; and what differs."""
    built = built_plugin_flags(config)
    flags = {name: built.get(name, value) for name, value in planned.items()}
    changed = [
        f"{name} {value} was asked, config.json says {built[name]}"
        for name, value in planned.items()
        if name in built and built[name] != value
    ]
    return flags, changed
