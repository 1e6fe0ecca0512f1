"""The facade's ids take all 128 bits from the OS's CSPRNG (facade/ids.py), with no UUID built."""

from __future__ import annotations

import os

import pytest

from facade import ids
from facade.request_context import new_request_id


def test_ids_are_the_os_random_bytes_in_hex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(0xF0, 0xF0 + n)))
    # All 128 bits are random: no uuid4 version or variant digits in the middle.
    expected = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
    assert ids.random_hex() == expected
    assert new_request_id() == f"req_{expected}"


def test_ids_differ() -> None:
    assert len({ids.random_hex() for _ in range(1000)}) == 1000
