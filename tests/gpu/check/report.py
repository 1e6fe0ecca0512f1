"""The check's output: one line per check, `PASS|FAIL <name> <detail>`, and the exit status."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO


@dataclass(frozen=True)
class Check:
    name: str  # no spaces, so the line splits into status, name and detail
    ok: bool
    detail: str

    def line(self) -> str:
        # One line whatever the detail holds (a tool's error may span several).
        detail = " | ".join(part.strip() for part in self.detail.splitlines() if part.strip())
        return f"{'PASS' if self.ok else 'FAIL'} {self.name} {detail}".rstrip()


@dataclass
class Report:
    """Prints each check as soon as it is known, so a slow step never hides earlier results."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        if " " in name:
            raise ValueError(f"check name {name!r} must not contain spaces")
        check = Check(name, ok, detail)
        self.checks.append(check)
        print(check.line(), file=self.out, flush=True)
        return ok

    @property
    def exit_status(self) -> int:
        """0 only when there were checks and all passed."""
        return 0 if self.checks and all(c.ok for c in self.checks) else 1
