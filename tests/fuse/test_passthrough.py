"""Passthrough opens (prodfs/kernel/_libpassthrough.c): the kernel reads verified payloads from the cache's files.

An open of a payload that is local and verified is answered by the library
with the cache's file; the kernel then reads it (and maps it, and reads
ahead) as if the file had been opened directly, and no read reaches the
daemon. These tests hold that to what the other read paths guarantee: the
same bytes, a file changed on disk never served to a new open, an evicted
payload still readable by whoever holds it open, and opens and releases
balanced. They are skipped where the kernel cannot pass through (before
Linux 6.9, or a daemon without CAP_SYS_ADMIN); tests/fuse/test_fast_path.py
covers the reads the daemon then serves.
"""

from __future__ import annotations

import errno
import mmap
import os
import random

import pytest

from tests.fuse.test_fast_path import CHANGED_LOG, _blob, _one_plate, _payloads, _read_all, damage_in_place
from tests.fuse.test_namespace import PRI, _drop_page_cache
from tests.support.helpers import file_tree, mounted


def _stats(m) -> dict:  # noqa: ANN001 - a tests.support.mount.Mount
    s = m.control("stats.json")
    if not s["passthrough"]["active"]:
        pytest.skip(f"the kernel does not pass through here: {s['passthrough']['why_inactive']}")
    return s


def test_cached_payloads_are_read_by_the_kernel_from_the_cache(tmp_path, pvc, pvc_url):
    files = _payloads(6)
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_url, cache=cache) as m:
        _read_all(m / PRI, files)
        s = _stats(m)
        # fetched and verified by the daemon at open, then handed over
        assert s["passthrough"]["opens_by_daemon"] == len(files) and s["blobs_fetched"] == len(files)
        _read_all(m / PRI, files)
        s = _stats(m)
        assert s["passthrough"]["opens"] == len(files)  # the second opens never reached Python
        assert s["passthrough"]["opens_by_daemon"] == len(files)
        assert s["reads"] == 0 and s["fast_read"]["reads"] == 0
    with mounted(tmp_path, pvc_url, cache=cache, name="job") as m:
        _drop_page_cache()
        _read_all(m / PRI, files)
        path = m / PRI / "plate.bin"
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == files["plate.bin"]
        s = _stats(m)
        through = s["passthrough"]
        assert through["opens"] == len(files) + 1 and through["opens_by_daemon"] == 0
        assert through["releases"] == through["opens"]  # every open closed, every record let go
        assert (through["page_cache_opens"], through["refused"]) == (0, 0)
        assert (s["reads"], s["blobs_hashed"], s["pvc_requests"] > 0) == (0, 0, True)
        assert s["opens"] >= through["opens"]  # counted with the daemon's own


def test_a_payload_changed_on_disk_is_never_opened_again(tmp_path, pvc, pvc_url):
    data, cache = _one_plate(tmp_path, pvc, 7)
    with mounted(tmp_path, pvc_url, cache=cache, allow_log=CHANGED_LOG) as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        blob = _blob(cache, data)
        for damage in ("flip", "truncate"):
            damage_in_place(blob, damage)  # the file the kernel was given
            _drop_page_cache()
            assert (m / PRI / "plate.exr").read_bytes() == data, damage
            assert (m / f"{PRI}@1" / "plate.exr").read_bytes() == data, damage
        s = _stats(m)
        assert s["blobs_fetched"] == 3 and s["reads"] == 0
        assert m.log_text().count("changed on disk") >= 2


def test_an_open_payload_changed_on_disk_refuses_new_opens(tmp_path, pvc, pvc_url):
    data, cache = _one_plate(tmp_path, pvc, 8)
    with mounted(tmp_path, pvc_url, cache=cache, allow_log=CHANGED_LOG) as m:
        path = m / PRI / "plate.exr"
        with open(path, "rb") as held:
            assert held.read() == data
            blob = _blob(cache, data)
            os.chmod(blob, 0o644)
            with open(blob, "r+b") as f:
                f.seek(100)
                f.write(b"\0" * 8)
            # The kernel keeps the inode on the file its open files use: a new open cannot be
            # given another file, and is not given this one.
            with pytest.raises(OSError) as err:
                path.read_bytes()
            assert err.value.errno == errno.EIO
            assert _stats(m)["passthrough"]["refused"] == 1
        # closed: the next open is checked, fetched again, and served
        assert path.read_bytes() == data
        s = _stats(m)
        through = s["passthrough"]
        assert s["blobs_fetched"] == 2 and through["releases"] == through["opens"] + through["opens_by_daemon"]


def test_open_payloads_stay_readable_when_evicted(tmp_path, pvc, pvc_url):
    rnd = random.Random(9)
    files = {f"take{i}.mov": rnd.randbytes(1 << 20) for i in range(10)}
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_url, "--cache-size", "3M", cache=cache) as m:
        with open(m / PRI / "take0.mov", "rb") as held:
            assert held.read(4096) == files["take0.mov"][:4096]
            _read_all(m / PRI, {k: v for k, v in files.items() if k != "take0.mov"})
            assert not _blob(cache, files["take0.mov"]).exists()  # evicted while open
            _drop_page_cache()
            assert held.read() == files["take0.mov"][4096:]  # the kernel holds the file
        assert (m / PRI / "take0.mov").read_bytes() == files["take0.mov"]  # fetched again
        s = _stats(m)
        assert s["blobs_fetched"] == 11 and s["reads"] == 0
        # nothing evicted is kept open once its readers are gone
        fds = f"/proc/{m.pid()}/fd"
        held_files = [os.readlink(f"{fds}/{fd}") for fd in os.listdir(fds)]
        assert not [p for p in held_files if p.endswith("(deleted)")], held_files


def test_writes_are_refused(tmp_path, pvc, pvc_url):
    data, cache = _one_plate(tmp_path, pvc, 10)
    with mounted(tmp_path, pvc_url, cache=cache) as m:
        path = m / PRI / "plate.exr"
        assert path.read_bytes() == data
        _stats(m)
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
            with pytest.raises(OSError) as err:
                os.open(path, flags)
            assert err.value.errno == errno.EROFS
        assert path.read_bytes() == data
