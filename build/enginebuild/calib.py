"""Turn a local calibration file into the dataset directory ModelOpt's quantize.py loads offline.

quantize.py (TRT-LLM 1.2.x `get_calib_dataloader`) takes `--calib_dataset` as a hub name or a
local *directory*, loads it with `datasets.load_dataset(dir, split="train")` and reads its
"text" column. We never want the hub (offline builders, reproducible scales), so the build
converts the operator's file into `<dir>/train.jsonl` with one {"text": ...} object per sample.

Accepted input: `.jsonl` (objects with "text", "prompt", or chat "messages"; or bare strings),
`.json` (a list of the same), or plain text (samples separated by blank lines).
Run as `python -m enginebuild.calib --input FILE --output DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Under this many samples the activation ranges are poorly estimated; warn but proceed.
MIN_RECOMMENDED_SAMPLES = 32


class CalibrationDataError(ValueError):
    """The calibration file is unreadable or holds no usable text."""


def sample_text(item: Any) -> str | None:
    """The text of one sample, or None when it has none."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return None
    for key in ("text", "prompt", "content"):
        if isinstance(item.get(key), str):
            return str(item[key])
    messages = item.get("messages")
    if isinstance(messages, list):
        parts = [m["content"] for m in messages if isinstance(m, dict) and isinstance(
            m.get("content"), str)]  # fmt: skip
        return "\n".join(parts) if parts else None
    return None


def read_samples(path: Path) -> list[str]:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationDataError(f"cannot read calibration file {path}: {exc}") from exc
    items: Iterable[Any]
    try:
        if path.suffix == ".jsonl":
            items = [json.loads(line) for line in raw.splitlines() if line.strip()]
        elif path.suffix == ".json":
            loaded = json.loads(raw)
            if not isinstance(loaded, list):
                raise CalibrationDataError(f"{path}: a .json calibration file must be a list")
            items = loaded
        else:
            items = raw.split("\n\n")
    except json.JSONDecodeError as exc:
        raise CalibrationDataError(f"{path} is not valid JSON: {exc}") from exc
    samples = [t.strip() for t in map(sample_text, items) if t and t.strip()]
    if not samples:
        raise CalibrationDataError(f"{path} holds no calibration text")
    return samples


def write_dataset(samples: Sequence[str], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "train.jsonl"
    with target.open("w", encoding="utf-8") as fh:
        for text in samples:
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m enginebuild.calib",
        description="Convert a local calibration file into a dataset directory for quantize.py.",
    )
    parser.add_argument("--input", type=Path, required=True, help="calibration file to read")
    parser.add_argument("--output", type=Path, required=True, help="dataset directory to write")
    args = parser.parse_args(argv)
    try:
        samples = read_samples(args.input)
    except CalibrationDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    written = write_dataset(samples, args.output)
    print(f"wrote {len(samples)} calibration samples to {written}")
    if len(samples) < MIN_RECOMMENDED_SAMPLES:
        print(
            f"warning: only {len(samples)} samples; {MIN_RECOMMENDED_SAMPLES}+ give steadier "
            "quantization scales",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
