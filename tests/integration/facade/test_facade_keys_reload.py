"""The keys file changing under a running facade: bad content must never stop revocation."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from facade.keys import create_key, load_keys, save_keys
from tests.integration.facade.conftest import serve_without_backend
from tests.support.waiting import eventually


def test_a_key_revoked_after_the_file_held_a_list_gets_401(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    kept, _ = create_key(path, "kept")
    revoked, _ = create_key(path, "revoked")
    good_records = load_keys(path)
    with serve_without_backend(keys_file=path, api_keys=[], keys_reload_interval_s=0.02) as facade:

        def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.get(f"{facade.url}/v1/models", headers=headers).status_code

        def failures_seen() -> bool:
            # At least one: the write below is not atomic, so the reloader may also catch the
            # empty file it starts with (refused the same way).
            metrics = httpx.get(f"{facade.url}/metrics").text
            match = re.search(
                r"^tensorchat_facade_keys_reload_failures_total (\S+)$", metrics, re.M
            )
            return match is not None and float(match.group(1)) >= 1

        assert status(revoked) == 200
        path.write_text("[]")  # valid JSON, not a keys file
        eventually(failures_seen, "the facade refusing the bad keys file")
        assert status(kept) == 200 and status(revoked) == 200  # the last good keys
        save_keys(path, [r for r in good_records if r.name != "revoked"])
        eventually(lambda: status(revoked) == 401, "the revoked key refused")
        assert status(kept) == 200
