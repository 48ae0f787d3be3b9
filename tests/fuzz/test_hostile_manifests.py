"""Hostile manifests: refused at publish by the service, and again by the daemon.

``..``, absolute paths, NUL, symlinks out of the version (directly or through
another link), duplicates, entries under a file, huge counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prodfs.storage.versions import VersionStore, VersionTree
from pvc_client import MAX_ENTRIES, InvalidInput, validate_manifest
from tests.support.helpers import Publisher, file_tree, mounted, need_fuse

PRI = "spies:100:10-lgt:walter"
DATA = b"payload\n"
SHA = hashlib.sha256(DATA).hexdigest()


def _file(path: str) -> dict:
    return {"path": path, "type": "file", "mode": 0o644, "size": len(DATA), "sha256": SHA}


def _dir(path: str) -> dict:
    return {"path": path, "type": "dir", "mode": 0o755}


def _link(path: str, target: str) -> dict:
    return {"path": path, "type": "symlink", "target": target}


HOSTILE = {
    "dotdot": [_file("../escape")],
    "inner dotdot": [_dir("a"), _file("a/../b")],
    "absolute": [_file("/etc/passwd")],
    "nul": [_file("a\x00b")],
    "empty component": [_dir("a"), _file("a//b")],
    "long component": [_file("x" * 256)],
    "absolute link": [_link("l", "/etc/passwd")],
    "climbing link": [_dir("d"), _link("d/l", "../../x")],
    "link through a link": [_dir("d"), _link("d/up", ".."), _link("l", "d/up/../../etc/passwd")],
    "duplicate": [_file("a"), _file("a")],
    "file as parent": [_file("a"), _file("a/b")],
    "missing parent": [_file("a/b")],
    "bad hash": [{**_file("a"), "sha256": "XYZ"}],
    "negative size": [{**_file("a"), "size": -1}],
    "mode beyond bits": [{**_file("a"), "mode": 0o170000}],
    "unknown type": [{"path": "a", "type": "fifo"}],
    "not an object": ["a"],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_daemon_side_validation_refuses(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_manifest(HOSTILE[name])


def test_huge_count_is_refused_before_any_work() -> None:
    huge = [None] * (MAX_ENTRIES + 1)  # refused on its length alone
    with pytest.raises(InvalidInput, match="at most"):
        validate_manifest(huge)


def test_service_refuses_hostile_manifests(tmp_path: Path, pvc_url: str) -> None:
    Publisher(pvc_url).call("upload_blob", SHA, DATA)
    with httpx.Client(base_url=pvc_url + "/api/v1", timeout=30) as api:
        for name, manifest in sorted(HOSTILE.items()):
            r = api.post(f"/products/{PRI}/versions", json={"manifest": manifest})
            assert r.status_code in (400, 422), (name, r.status_code, r.text)
            assert r.json()["error"]["code"] in ("invalid_manifest", "invalid"), (name, r.text)
        assert api.get(f"/products/{PRI}").status_code == 404  # nothing was created


@pytest.mark.slow
def test_service_refuses_a_huge_count(pvc_url: str) -> None:
    manifest = [_dir(f"d{i}") for i in range(MAX_ENTRIES + 1)]
    with httpx.Client(base_url=pvc_url + "/api/v1", timeout=300) as api:
        r = api.post(f"/products/{PRI}/versions", json={"manifest": manifest})
        assert r.status_code in (400, 413), r.text
        assert api.get(f"/products/{PRI}").status_code == 404


def _version(manifest: object) -> dict:
    return {"pri": PRI, "number": 1, "product_id": 1, "created_at": "2026-01-01T00:00:00Z", "manifest": manifest}


def test_version_store_refuses_a_hostile_answer(tmp_path: Path) -> None:
    async def hostile(pri: str, number: int) -> dict:
        return _version(HOSTILE["link through a link"])

    store = VersionStore(hostile, tmp_path)
    with pytest.raises(InvalidInput):
        trio.run(store.get, PRI, 1, 1)
    assert not (tmp_path / "manifests").exists() or not list((tmp_path / "manifests").rglob("*.json"))


_names = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=8) | st.sampled_from(
    ["..", ".", "", "a", "b", "d"])
_paths = st.lists(_names, min_size=1, max_size=4).map("/".join) | st.sampled_from(["/abs", "a/", "/"])
_entries = st.one_of(
    st.builds(lambda p: _dir(p), _paths),
    st.builds(lambda p: _file(p), _paths),
    st.builds(_link, _paths, st.lists(_names, min_size=1, max_size=5).map("/".join)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entries, max_size=12))
def test_whatever_validates_stays_inside(manifest: list[dict]) -> None:
    """Any manifest either is refused, or gives a tree whose every path and link stays inside."""
    try:
        tree = VersionTree.from_json(_version(manifest))
    except InvalidInput:
        return
    for children in tree.dirs.values():
        for e in children.values():
            parts = e.path.split("/")
            assert all(p not in ("", ".", "..") for p in parts) and not e.path.startswith("/")
            if e.type == "symlink":
                depth = len(parts) - 1
                for p in e.target.split("/"):  # lexically at least; chains are checked by the rule
                    depth += -1 if p == ".." else 0 if p in ("", ".") else 1
                    assert depth >= 0, e


def test_daemon_refuses_a_tampered_manifest_cache(tmp_path: Path, pvc_url: str) -> None:
    """A hostile manifest planted in the daemon's disk cache is refused and refetched."""
    need_fuse()
    pvc = Publisher(pvc_url)
    pvc.publish(PRI, file_tree(tmp_path / "src", {"a.txt": b"real\n"}))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_url, cache=cache, name="first") as m:
        assert sorted(os.listdir(m / PRI)) == ["a.txt"]
    # plant a hostile manifest where the daemon keeps that version's
    (planted,) = (cache / "manifests").rglob("*.json")
    doc = json.loads(planted.read_text())
    doc["manifest"] = [_dir("d"), _link("d/up", ".."), _link("etc", "d/up/../../etc")]
    planted.write_text(json.dumps(doc))
    with mounted(tmp_path, pvc_url, cache=cache) as m:
        assert sorted(os.listdir(m / PRI)) == ["a.txt"]
        assert (m / PRI / "a.txt").read_bytes() == b"real\n"
        assert "unusable" in m.log_text()
        assert m.control("stats.json")["manifests_fetched"] == 1  # refetched from the service
