"""The facade is deployed without the inference service: it must not import it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import facade


def test_the_facade_app_imports_no_inference_module() -> None:
    probe = (
        "import sys, facade.app, facade.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'inference'))"
    )
    root = str(Path(facade.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "[]"
