"""Requests answered in C (prodfs/kernel/_fastpath.py, prodfs/kernel/_libfastread.c, prodfs/kernel/_libfastlookup.c).

Once a payload is local and verified, its reads never enter Python; once a
version's directory is listed, its names' lookups never do. These tests hold
those paths to what the Python ones guarantee: the same bytes and the same
attributes, a payload changed on disk is never served (the read goes back to
the daemon, which refetches it), an evicted payload's space is given back,
and ``--no-fast-path`` serves the same tree the old way. They mount with
``--no-passthrough``: with passthrough, the kernel reads verified payloads
from the cache itself and the C read path only serves what cannot be.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

from tests.fuse.test_namespace import PRI, _drop_page_cache, compare_trees, make_tree
from tests.support.helpers import file_tree, mounted

CHANGED_LOG = re.compile(r"changed on disk|corrupt")
# Reads reach the C path only when the kernel does not read the cache's file itself (tests/fuse/test_passthrough.py).
C_READS = ("--no-passthrough",)


def _payloads(seed: int, copies: bool = False) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files = {f"frames/f{i:03}.exr": rnd.randbytes(4096 + i) for i in range(40)}
    files["plate.bin"] = rnd.randbytes((3 << 20) + 12345)  # several 1 MiB requests, a short last one
    if copies:
        # the same payload under other names: in the same directory (one batch handed to the C
        # path) and in another one (a payload given a slot already)
        files["frames/f000-copy.exr"] = files["elsewhere/f001.exr"] = files["frames/f001.exr"]
    return files


def _read_all(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data, rel


def _blob(cache: Path, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return cache / "blobs" / sha[:2] / sha


def damage_in_place(blob: Path, damage: str) -> None:
    """Flip a byte of a cached payload, or cut it in half, keeping its inode."""
    raw = bytearray(blob.read_bytes())
    if damage == "flip":
        raw[12345 % len(raw)] ^= 0xFF
    else:
        del raw[len(raw) // 2:]
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(raw))


def test_a_new_daemon_answers_every_read_of_cached_payloads_in_c(tmp_path, pvc, pvc_url):
    files = _payloads(1, copies=True)
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_url, *C_READS, cache=cache) as m:
        _read_all(m / PRI, files)  # fetched: the first reads of each go through the daemon
        first = m.control("stats.json")
        assert first["blobs_fetched"] == len(set(files.values()))
    # The next render job: every payload is in the cache and in the ledger, so
    # each inode is handed to the C path at its lookup, before its first read.
    with mounted(tmp_path, pvc_url, *C_READS, cache=cache, name="job") as m:
        _drop_page_cache()
        _read_all(m / PRI, files)
        s = m.control("stats.json")
        assert s["fast_read"]["reads"] == s["reads"] >= len(files)
        assert s["bytes_read"] == sum(map(len, files.values()))
        assert (s["fast_read"]["fallbacks"], s["fast_read"]["errors"], s["blobs_hashed"]) == (0, 0, 0)
    with mounted(tmp_path, pvc_url, "--no-fast-path", cache=cache, name="python") as m:
        _drop_page_cache()
        _read_all(m / PRI, files)
        s = m.control("stats.json")
        assert s["fast_read"] is None and s["reads"] >= len(files)


def _one_plate(tmp_path: Path, pvc, seed: int) -> tuple[bytes, Path]:  # noqa: ANN001 - the publisher fixture
    """Publish one 1 MiB plate; return its bytes and the cache directory the test mounts with."""
    data = random.Random(seed).randbytes(1 << 20)
    pvc.publish(PRI, file_tree(tmp_path / "src", {"plate.exr": data}))
    return data, tmp_path / "cache"


def test_a_payload_changed_on_disk_goes_back_to_the_daemon(tmp_path, pvc, pvc_url):
    data, cache = _one_plate(tmp_path, pvc, 2)
    with mounted(tmp_path, pvc_url, *C_READS, cache=cache, allow_log=CHANGED_LOG) as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        blob = _blob(cache, data)
        for damage in ("flip", "truncate"):
            damage_in_place(blob, damage)  # the same inode the C path holds open
            # another path to the same content: a new inode, no kernel page cache to answer
            assert (m / f"{PRI}@1" / "plate.exr").read_bytes() == data, damage
            _drop_page_cache()
            assert (m / f"{PRI}@latest" / "plate.exr").read_bytes() == data, damage
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name  # refetched
        s = m.control("stats.json")
        assert s["fast_read"]["fallbacks"] >= 2 and s["fast_read"]["errors"] == 0
        assert s["blobs_fetched"] == 3
        assert m.log_text().count("changed on disk") >= 2


def test_a_payload_touched_on_disk_is_checked_once_then_served_in_c_again(tmp_path, pvc, pvc_url):
    data, cache = _one_plate(tmp_path, pvc, 5)
    with mounted(tmp_path, pvc_url, *C_READS, cache=cache, allow_log=CHANGED_LOG) as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        os.utime(_blob(cache, data))  # the ctime moves, the bytes do not
        assert (m / f"{PRI}@1" / "plate.exr").read_bytes() == data  # the C check fails: hashed again
        before = m.control("stats.json")
        assert before["fast_read"]["fallbacks"] >= 1
        assert (before["blobs_hashed"], before["blobs_fetched"]) == (1, 1)
        _drop_page_cache()
        assert (m / f"{PRI}@latest" / "plate.exr").read_bytes() == data
        after = m.control("stats.json")
        # registered again with its new signature: every read of the new path answered in C
        assert after["reads"] - before["reads"] == after["fast_read"]["reads"] - before["fast_read"]["reads"] > 0
        assert after["fast_read"]["fallbacks"] == before["fast_read"]["fallbacks"]


def test_evicted_payloads_are_let_go(tmp_path, pvc, pvc_url):
    rnd = random.Random(3)
    files = {f"take{i}.mov": rnd.randbytes(1 << 20) for i in range(6)}
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    cache = tmp_path / "cache"
    first, then = dict(list(files.items())[:3]), dict(list(files.items())[3:])
    # which payloads are cached is the point here: none comes along with another
    with mounted(tmp_path, pvc_url, *C_READS, "--fetch-ahead", "0", cache=cache) as m:
        _read_all(m / PRI, first)
    with mounted(tmp_path, pvc_url, *C_READS, "--cache-size", "3M", cache=cache, name="small") as m:
        _read_all(m / PRI, first)  # trusted from the ledger: held by the C path only
        assert m.control("stats.json")["fast_read"]["reads"] > 0
        _read_all(m / PRI, then)  # fetched: the first three make room
        s = m.control("stats.json")
        assert s["blobs_fetched"] == 3 and not _blob(cache, files["take0.mov"]).exists()
        # the C path kept an fd per payload: an evicted one must not keep its space
        fds = Path(f"/proc/{m.pid()}/fd")
        held = [os.readlink(fds / fd) for fd in os.listdir(fds)]
        assert not [p for p in held if p.endswith("(deleted)")], held
        _read_all(m / f"{PRI}@1", first)  # new inodes: fetched again
        assert m.control("stats.json")["blobs_fetched"] == 6


def _attributes(root: Path, names: list[str]) -> dict[str, tuple]:
    """lstat each name by its path, without listing a directory first (a listing would
    bring the entries with it, and no LOOKUP would follow)."""
    out = {}
    for rel in names:
        st = os.lstat(root / rel)
        out[rel] = (st.st_mode, st.st_size, st.st_nlink, st.st_uid, st.st_gid, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_blocks, st.st_blksize)
    return out


def test_lookups_answered_in_c_give_what_the_daemon_gives(tmp_path, pvc, pvc_url):
    src = make_tree(tmp_path / "src")
    pvc.publish(PRI, src)
    names = sorted(os.path.relpath(os.path.join(top, n), src)
                   for top, dirs, files in os.walk(src) for n in dirs + files)
    with mounted(tmp_path, pvc_url, "--no-fast-path", name="python") as m:
        expected = _attributes(m / f"{PRI}@1", names)
        assert m.control("stats.json")["fast_lookups"] is None
    with mounted(tmp_path, pvc_url, name="c") as m:
        os.stat(m / f"{PRI}@1" / "walter.usda")  # version 1 loaded

        def by_daemon() -> tuple[int, int]:  # lookups the daemon answered, and C (after this read's own)
            s = m.control("stats.json")
            return s["lookups"] - s["fast_lookups"], s["fast_lookups"]

        first, again = by_daemon(), by_daemon()
        reading = again[0] - first[0]  # the lookups of reading the control file itself
        # Another name of a version loaded already: its top directory's names go to C with its
        # lookup, so the first name inside comes no more to the daemon than the others do.
        os.stat(m / PRI / "walter.usda")
        after = by_daemon()
        assert (after[0] - again[0] - reading, after[1] - again[1]) == (1, 1), (first, again, after)
        for version in (f"{PRI}@1", PRI):
            got = _attributes(m / version, names)
            assert got == expected, version
        s = m.control("stats.json")
        # the first name of each directory comes to the daemon, which hands the directory over
        assert s["fast_lookups"] >= len(names) // 2, s
        assert compare_trees(src, m / PRI) == len(names)
        # a name that is not there still gets ENOENT (from the daemon: misses are never kept in C)
        assert not (m / PRI / "nested" / "nope").exists()
        assert not (m / PRI / "nested" / "a" / "b" / "deep.txt" / "x").exists()


def test_payloads_read_in_c_count_as_used_when_the_cache_evicts(tmp_path, pvc, pvc_url):
    rnd = random.Random(4)
    files = {f"take{i}.mov": rnd.randbytes(1 << 20) for i in range(4)}
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_url, *C_READS, "--fetch-ahead", "0", cache=cache) as m:
        for name in ("take0.mov", "take1.mov", "take2.mov"):  # take0 the least recently used
            assert (m / PRI / name).read_bytes() == files[name]
    with mounted(tmp_path, pvc_url, *C_READS, "--cache-size", "3M", cache=cache, name="small") as m:
        assert (m / PRI / "take0.mov").read_bytes() == files["take0.mov"]  # through the C path only
        s = m.control("stats.json")
        assert s["fast_read"]["reads"] > 0 and s["blobs_fetched"] == 0
        assert (m / PRI / "take3.mov").read_bytes() == files["take3.mov"]  # fetched: one must go
        assert _blob(cache, files["take0.mov"]).exists()  # read just now: not that one
        assert not _blob(cache, files["take1.mov"]).exists()
