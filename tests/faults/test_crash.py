"""The daemon killed with SIGKILL in the middle of reads and of a download.

Readers get an error, not a hang; the next ``prodfs mount`` recovers the dead
mountpoint; the cache never holds a half-written blob under its name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import Publisher, blob_problems, file_tree, mounted, prodfs
from tests.support.faultproxy import FaultProxy
from tests.support.mount import wait_for, wait_gone

pytestmark = pytest.mark.fuse

PRI = "spies:100:10-lgt:walter"
READER = """
import sys
path = sys.argv[1]
try:
    while True:
        with open(path, "rb") as f:
            while f.read(65536):
                pass
        if sys.argv[2] == "once":
            break
except OSError as exc:
    print(exc.errno, flush=True)
    sys.exit(3)
"""


def _reader(path: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", READER, str(path), mode], stdout=subprocess.PIPE, text=True)


def test_sigkill_mid_read_and_mid_download(tmp_path: Path, pvc: Publisher, proxy: FaultProxy) -> None:
    big = os.urandom(4 << 20)
    warm = os.urandom(1 << 20)
    pvc.publish(PRI, file_tree(tmp_path / "src", {"big.bin": big, "warm.bin": warm}))
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    prodfs("mount", str(mnt), "--pvc", proxy.url, "--cache-dir", str(cache), "--log-file", str(tmp_path / "a.log"),
           "--pvc-timeout", "30")
    try:
        assert (mnt / PRI / "warm.bin").read_bytes() == warm
        pid = int(json.loads((mnt / ".prodfs" / "stats.json").read_text())["pid"])
        looping = _reader(mnt / PRI / "warm.bin", "loop")  # reading a cached file, over and over
        proxy.slow(0.2)  # the download of big.bin crawls: the kill lands in the middle
        opening = _reader(mnt / PRI / "big.bin", "once")
        wait_for(lambda: any(p.stat().st_size > 0 for p in (cache / "tmp").iterdir()), timeout=30)
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        for reader in (looping, opening):
            out, _ = reader.communicate(timeout=30)  # an error, never a hang
            assert reader.returncode == 3, (reader.returncode, out)
        partial = list((cache / "tmp").iterdir())
        assert partial, "the kill was meant to land mid-download"
        assert blob_problems(cache) == []  # nothing half-written under a blob's name
        proxy.passthrough()
    finally:
        status = prodfs("status", str(mnt), "--json", check=False)
    assert '"dead"' in status.stdout
    # the next mount recovers the dead mountpoint and cleans the leftovers
    with mounted(tmp_path, proxy.url, name="mnt", cache=cache) as m:
        assert not list((cache / "tmp").iterdir())
        assert (m / PRI / "big.bin").read_bytes() == big
        assert (m / PRI / "warm.bin").read_bytes() == warm
    assert blob_problems(cache) == []


def test_fetched_but_unrecorded_payloads_are_hashed_again(tmp_path: Path, pvc: Publisher, pvc_url: str) -> None:
    import sqlite3

    files = {f"layer{i}.usda": os.urandom(20_000) for i in range(12)}
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    prodfs("mount", str(mnt), "--pvc", pvc_url, "--cache-dir", str(cache), "--log-file", str(tmp_path / "a.log"))
    try:
        for name, data in files.items():
            assert (mnt / PRI / name).read_bytes() == data
        pid = int(json.loads((mnt / ".prodfs" / "stats.json").read_text())["pid"])
        os.kill(pid, signal.SIGKILL)  # at once: the ledger is written behind, after a sync
        wait_gone(pid)
    finally:
        prodfs("status", str(mnt), "--json", check=False)
    with sqlite3.connect(cache / "verified.sqlite") as db:
        recorded = {sha for (sha,) in db.execute("SELECT sha FROM verified")}
    fetched = {p.name for p in (cache / "blobs").rglob("*") if p.is_file()}
    assert len(fetched) == len(files)
    with mounted(tmp_path, pvc_url, name="mnt", cache=cache) as m:
        for name, data in files.items():
            assert (m / PRI / name).read_bytes() == data
        s = m.control("stats.json")
        # what has no record is hashed before it is served, what has one is trusted; nothing fetched again
        assert s["blobs_hashed"] == len(fetched - recorded) and s["blobs_fetched"] == 0, (s, len(recorded))
