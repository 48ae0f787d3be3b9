"""Bad input is answered 4xx with the right code, and nothing is stored."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from .helpers import error_code, file_entry, publish, sha, upload

pytestmark = pytest.mark.anyio

PRI = "spies:100:10-lgt:walter"


async def _nothing_changed(api: httpx.AsyncClient, versions: int, events: int) -> None:
    r = await api.get(f"/products/{PRI}")
    if versions == 0:
        assert r.status_code == 404
    else:
        assert r.json()["latest"] == versions
    assert len((await api.get("/events")).json()["events"]) == events


@pytest.mark.parametrize("manifest", [
    [{"path": "../escape", "type": "file", "size": 1, "sha256": "a" * 64}],
    [{"path": "/etc/passwd", "type": "file", "size": 1, "sha256": "a" * 64}],
    [{"path": "a\x00b", "type": "dir"}],
    [{"path": "a/./b", "type": "dir"}],
    [{"path": "a", "type": "dir"}, {"path": "a", "type": "dir"}],
    [{"path": "a/b", "type": "dir"}],  # parent missing
    [{"path": "link", "type": "symlink", "target": "../../outside"}],
    [{"path": "link", "type": "symlink", "target": "/abs"}],
    [{"path": "f", "type": "file", "size": -1, "sha256": "a" * 64}],
    [{"path": "f", "type": "file", "size": 1, "sha256": "NOTHEX"}],
    [{"path": "f", "type": "fifo"}],
    ["not an object"],
])
async def test_manifest_rules(api: httpx.AsyncClient, manifest: list[Any]) -> None:
    r = await api.post(f"/products/{PRI}/versions", json={"manifest": manifest})
    assert r.status_code == 400 and error_code(r) == "invalid_manifest", r.text
    await _nothing_changed(api, 0, 0)


async def test_malformed_pris(api: httpx.AsyncClient) -> None:
    for bad in ("nodash", "spies:-x", "spies--x", "spies-x@1", "sp ies-x", "a" * 300 + "-x"):
        r = await api.post(f"/products/{bad}/versions", json={"manifest": []})
        assert r.status_code == 400 and error_code(r) == "invalid_pri", bad
        r = await api.get(f"/products/{bad}")
        assert r.status_code == 400 and error_code(r) == "invalid_pri", bad
    r = await api.post(f"/products/{PRI}/versions", json={"manifest": [], "dependencies": ["nodash@1"]})
    assert r.status_code == 400 and error_code(r) == "invalid_pri"
    r = await api.post(f"/products/{PRI}/versions", json={"manifest": [], "dependencies": ["a-b@1.2.3"]})
    assert r.status_code == 400 and error_code(r) == "invalid_pri"
    await _nothing_changed(api, 0, 0)


async def test_missing_and_late_dependencies(api: httpx.AsyncClient) -> None:
    await publish(api, "spies:asset-tex", at="2020-01-01T00:00:00Z")
    await publish(api, "spies:asset-tex", {"x": b"2"}, at="2020-06-01T00:00:00Z")
    for deps in (["spies:asset-nothing@1"], ["spies:asset-tex@3"], ["spies:asset-tex@approved"]):
        r = await api.post(f"/products/{PRI}/versions", json={"manifest": [], "dependencies": deps})
        assert r.status_code == 400 and error_code(r) == "invalid", deps
        assert "spies:asset-" in r.json()["error"]["message"]
    # the dependency must already exist at the new version's time
    r = await api.post(f"/products/{PRI}/versions", json={
        "manifest": [], "dependencies": ["spies:asset-tex@2"], "at": "2020-03-01T00:00:00Z"})
    assert r.status_code == 400 and error_code(r) == "invalid"
    await _nothing_changed(api, 0, 2)
    # a versionless dependency means the newest one at the version's time
    ok = await publish(api, PRI, dependencies=["spies:asset-tex"], at="2020-03-01T00:00:00Z")
    assert ok["dependencies"] == ["spies:asset-tex@1"]


async def test_at_in_future_or_before_newest(api: httpx.AsyncClient) -> None:
    await publish(api, PRI, at="2021-01-01T00:00:00Z")
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).isoformat()
    for at in (future, "2020-12-31T23:59:59Z"):
        r = await api.post(f"/products/{PRI}/versions", json={"manifest": [], "at": at})
        assert r.status_code == 409 and error_code(r) == "conflict", at
    r = await api.post(f"/products/{PRI}/versions", json={"manifest": [], "at": "soon"})
    assert r.status_code == 400 and error_code(r) == "invalid_time"
    await _nothing_changed(api, 1, 1)
    # the same instant as the newest version is allowed
    same = await publish(api, PRI, at="2021-01-01T00:00:00Z")
    assert same["number"] == 2


async def test_blobs_must_exist_with_their_size(api: httpx.AsyncClient) -> None:
    present = await upload(api, b"present")
    manifest = [file_entry("a", b"present"), file_entry("b", b"never uploaded")]
    r = await api.post(f"/products/{PRI}/versions", json={"manifest": manifest})
    assert r.status_code == 400 and error_code(r) == "invalid"
    assert sha(b"never uploaded") in r.json()["error"]["message"]
    wrong_size = [{"path": "a", "type": "file", "size": 3, "sha256": present}]
    r = await api.post(f"/products/{PRI}/versions", json={"manifest": wrong_size})
    assert r.status_code == 400 and error_code(r) == "invalid_manifest"
    await _nothing_changed(api, 0, 0)


async def test_hash_mismatch_keeps_nothing(api: httpx.AsyncClient, tmp_path: Path) -> None:
    claimed = sha(b"what was promised")
    r = await api.put(f"/blobs/{claimed}", content=b"something else")
    assert r.status_code == 400 and error_code(r) == "hash_mismatch"
    assert (await api.head(f"/blobs/{claimed}")).status_code == 404
    assert (await api.post("/blobs/missing", json={"sha256": [claimed]})).json() == {"missing": [claimed]}
    blob_files = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]
    assert blob_files == []


async def test_bad_blob_names_never_touch_the_disk(api: httpx.AsyncClient) -> None:
    for name in ("abc", "A" * 64, "g" * 64, "..%2F..%2Fetc%2Fpasswd", "a" * 65):
        r = await api.put(f"/blobs/{name}", content=b"x")
        assert r.status_code in (400, 404), name
        if r.status_code == 400:
            assert error_code(r) == "invalid"
        r = await api.get(f"/blobs/{name}")
        assert r.status_code in (400, 404), name
    r = await api.post("/blobs/missing", json={"sha256": ["nothex"]})
    assert r.status_code == 400 and error_code(r) == "invalid"


async def test_schema_errors_are_422_invalid(api: httpx.AsyncClient) -> None:
    cases: list[tuple[str, str, Any]] = [
        ("post", f"/products/{PRI}/versions", {"manifest": "nope"}),
        ("post", f"/products/{PRI}/versions", {"manifest": [], "typo": 1}),
        ("post", f"/products/{PRI}/versions", {"manifest": [], "labels": "published"}),
        ("post", f"/products/{PRI}/rename", {}),
        ("post", "/closure", {"roots": "x"}),
        ("post", "/blobs/missing", {"sha": []}),
    ]
    for method, path, body in cases:
        r = await getattr(api, method)(path, json=body)
        assert r.status_code == 422 and error_code(r) == "invalid", (path, body)
    r = await api.post(f"/products/{PRI}/versions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and error_code(r) == "invalid"
    await _nothing_changed(api, 0, 0)


async def test_unknown_routes_and_methods(api: httpx.AsyncClient) -> None:
    r = await api.get("/nothing/here")
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = await api.patch(f"/products/{PRI}")
    assert r.status_code == 405 and error_code(r) == "invalid"
    r = await api.get("http://pvc.test/elsewhere")
    assert r.status_code == 404 and error_code(r) == "not_found"
