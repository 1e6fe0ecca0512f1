"""A served model's `created` is its checkpoint's time, not the time it was loaded.

The facade's system_fingerprint is derived from (id, engine, created): the same model on the
same engine must keep it across restarts, as OpenAI's does for one backend configuration.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from inference.config import ModelConfig
from inference.registry import load_model

WRITTEN_AT = 1_700_000_000  # 2023-11-14: long before any test runs


def test_created_is_the_checkpoints_time_on_every_load(
    tiny_qwen2_dir: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_qwen2_dir, checkpoint)
    for file in checkpoint.iterdir():
        os.utime(file, (WRITTEN_AT, WRITTEN_AT))
    config = ModelConfig(id="m", engine="synthetic", checkpoint=checkpoint, context_length=64)

    async def load_twice() -> list[int]:
        created = []
        for _ in range(2):
            model = await load_model(config)
            created.append(model.created)
            await model.engine.shutdown()
        return created

    assert asyncio.run(load_twice()) == [WRITTEN_AT, WRITTEN_AT]
