"""What the deploy tests share: the repo's files, the validator tools, the real setting names."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def tool(name: str) -> str:
    """A validator binary of the dev extra (next to this interpreter first, then PATH)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def real_settings() -> set[str]:
    """Every TENSORCHAT_* variable the code reads: the facade's settings and inference's."""
    from facade.settings import FacadeSettings
    from inference.config import MODELS_ENV_VAR
    from inference.engines.torch.loader import CACHE_DIR_ENV

    prefix = FacadeSettings.model_config.get("env_prefix", "")
    facade = {f"{prefix}{name}".upper() for name in FacadeSettings.model_fields}
    return facade | {MODELS_ENV_VAR, CACHE_DIR_ENV}


def unknown_settings(names: set[str]) -> set[str]:
    """The TENSORCHAT_* names the code does not read."""
    ours = {name for name in names if name.startswith("TENSORCHAT_")}
    return ours - real_settings()


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: COPY, RUN, ...
    arguments: str
    line: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """A Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        text = " ".join([*pending, stripped])
        pending = []
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The argv of an ENTRYPOINT / CMD / HEALTHCHECK CMD: JSON (exec) form or shell words."""
    if arguments.startswith("["):
        return [str(part) for part in json.loads(arguments)]
    return shlex.split(arguments)


def copy_sources(instruction: Instruction) -> list[str]:
    """The context paths of a COPY/ADD (none for COPY --from, which copies from a stage)."""
    words = exec_form(instruction.arguments)
    flags = [w for w in words if w.startswith("--")]
    if any(flag.startswith("--from") for flag in flags):
        return []
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


def image_command(path: Path) -> list[str]:
    """ENTRYPOINT + CMD of the final stage, as the container runs them without arguments."""
    entrypoint: list[str] = []
    cmd: list[str] = []
    for instruction in dockerfile_instructions(path):
        if instruction.keyword == "FROM":
            entrypoint, cmd = [], []
        elif instruction.keyword == "ENTRYPOINT":
            entrypoint, cmd = exec_form(instruction.arguments), []
        elif instruction.keyword == "CMD":
            cmd = exec_form(instruction.arguments)
    return entrypoint + cmd


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore's patterns leave `path` out of the context (the last match wins;
    a pattern matching a parent directory matches everything under it)."""
    from fnmatch import fnmatchcase

    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        include = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        globs = [glob, glob.removeprefix("**/")] if glob.startswith("**/") else [glob]
        suffixes = (
            ["/".join(parts[i:]) for i in range(len(parts))] if glob.startswith("**/") else []
        )
        if any(fnmatchcase(c, g) for c in candidates + suffixes for g in globs):
            excluded = not include
    return excluded


def dockerignore_patterns(dockerfile: Path) -> list[str] | None:
    """The patterns of <Dockerfile>.dockerignore (BuildKit's per-Dockerfile file), if any."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.exists():
        return None
    lines = (line.strip() for line in ignore.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]
