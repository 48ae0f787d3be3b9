"""A cold open brings its directory's small payloads along, in one request.

A render node starts with an empty cache: the first open in a directory of a
version fetches the payload with its small neighbours as one pack, so the
next opens there are local. What comes along is bounded (``--fetch-ahead``,
an eighth of a bounded cache), verified like any fetch, and trusted by the
next daemon on the same cache once the first has unmounted.
"""

from __future__ import annotations

import os
import random

from tests.fuse.test_namespace import PRI
from tests.support.helpers import file_tree, mounted


def _shot(n: int = 40) -> dict[str, bytes]:
    rnd = random.Random(7)
    files = {f"frames/f{i:03d}.exr": rnd.randbytes(3000 + i) for i in range(n)}
    files["frames/huge.exr"] = rnd.randbytes(5 << 20)  # over the pack limit: never brought along
    files["other/notes.txt"] = b"another directory\n"
    return files


def test_a_cold_open_fetches_its_neighbours_in_one_request(tmp_path, pvc, pvc_url):
    files = _shot()
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    cache = tmp_path / "cache"
    small = sorted(k for k in files if k.startswith("frames/f"))
    with mounted(tmp_path, pvc_url, cache=cache) as m:
        before = m.control("stats.json")
        assert (m / PRI / small[5]).read_bytes() == files[small[5]]
        first = m.control("stats.json")
        assert first["blobs_fetched"] - before["blobs_fetched"] == len(small)
        # the product (learned at its first lookup), the manifest and one pack
        assert first["pvc_requests"] - before["pvc_requests"] <= 3, (before, first)
        for name in small:
            assert (m / PRI / name).read_bytes() == files[name]
        assert (m / PRI / "other/notes.txt").read_bytes() == files["other/notes.txt"]
        assert (m / PRI / "frames/huge.exr").read_bytes() == files["frames/huge.exr"]
        after = m.control("stats.json")
        # the neighbours came local; the other directory and the huge one each cost one request
        assert after["blobs_fetched"] == len(small) + 2 and after["errors"] == 0
        assert after["pvc_requests"] - first["pvc_requests"] == 2
    cached = {p.name for p in (cache / "blobs").rglob("*") if p.is_file()}
    assert len(cached) == len(small) + 2
    with mounted(tmp_path, pvc_url, cache=cache, name="next") as m:
        for name, data in files.items():
            assert (m / PRI / name).read_bytes() == data
        s = m.control("stats.json")
        # recorded in the ledger at unmount: trusted without hashing, nothing fetched
        assert (s["blobs_fetched"], s["blobs_hashed"]) == (0, 0)


def test_fetch_ahead_is_bounded(tmp_path, pvc, pvc_url):
    files = _shot()
    pvc.publish(PRI, file_tree(tmp_path / "src", files))
    one = sorted(k for k in files if k.startswith("frames/f"))[0]
    with mounted(tmp_path, pvc_url, "--fetch-ahead", "0", name="off") as m:
        assert (m / PRI / one).read_bytes() == files[one]
        assert m.control("stats.json")["blobs_fetched"] == 1
    with mounted(tmp_path, pvc_url, "--fetch-ahead", "20K", name="some") as m:
        assert (m / PRI / one).read_bytes() == files[one]
        fetched = m.control("stats.json")["bytes_fetched"]
        assert 3 <= m.control("stats.json")["blobs_fetched"] <= 7 and fetched <= 20 << 10
    with mounted(tmp_path, pvc_url, "--cache-size", "64K", name="bounded") as m:  # an eighth: 8K
        assert (m / PRI / one).read_bytes() == files[one]
        assert m.control("stats.json")["blobs_fetched"] <= 2
    assert not os.path.ismount(tmp_path / "off")
