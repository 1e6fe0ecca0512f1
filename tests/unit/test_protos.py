"""The committed generated code matches `protos/` (regenerate: `python -m tensorchat.protogen`)."""

from pathlib import Path

from tensorchat import protogen


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    for fresh in protogen.generate(tmp_path):
        committed = protogen.REPO_ROOT / fresh.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run python -m tensorchat.protogen"
        assert committed.read_bytes() == fresh.read_bytes(), (
            f"{committed} is stale: run python -m tensorchat.protogen"
        )
