"""`sha256_file`: the hash of any file, whatever its size against the read buffer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc_client import sha256_file


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), bufsize=st.integers(min_value=1, max_value=1100))
def test_any_size_hashes_as_hashlib(tmp_path_factory: pytest.TempPathFactory, data: bytes, bufsize: int) -> None:
    path = tmp_path_factory.mktemp("h") / "f"
    path.write_bytes(data)
    assert sha256_file(path, bufsize=bufsize) == hashlib.sha256(data).hexdigest()


def test_a_file_grown_since_it_was_opened_is_hashed_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the buffer is sized from fstat: bytes added after that still count (read to the end)
    path = tmp_path / "f"
    path.write_bytes(b"a" * 10)
    real_fstat = os.fstat

    def grow_then_fstat(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        with open(path, "ab") as f:
            f.write(b"b" * 3000)
        return st

    monkeypatch.setattr(os, "fstat", grow_then_fstat)
    assert sha256_file(path) == hashlib.sha256(b"a" * 10 + b"b" * 3000).hexdigest()
