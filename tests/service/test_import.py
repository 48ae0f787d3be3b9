"""The bulk loader (`pvc_service._import`, ``pvc import``): an imported store answers like a published one.

(a) a generated history imported into one store and published through the API
into another give the same HTTP answers; (b) a bad line is refused with its
number and the store is left exactly as it was; (c) a running service serves
what was imported, and its feed wakes up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from bench.gen_history import file_content, history
from pvc_client import cli
from pvc_service import _import
from pvc_service._db import normalize_db_url
from pvc_service._schema import metadata
from pvc_service.app import create_app
from pvc_service.config import ServiceConfig
from tests.support.service import pg_database, running_service

from .conftest import client
from .helpers import sha

EXTRA_TIME = "2024-01-01T00:00:00Z"


def _records() -> list[dict[str, Any]]:
    records = list(history(24, 3, files=2, seed=7))
    data = file_content("spies:999:10-fx", 1, "fx.usd")
    # versionless and label dependencies, a repeated label, a symlink, no number nor author
    records.append({
        "pri": "spies:999:10-fx", "created_at": EXTRA_TIME, "message": "extra",
        "manifest": [{"path": "fx.usd", "type": "file", "size": len(data), "sha256": sha(data), "mode": 0o644},
                     {"path": "link.usd", "type": "symlink", "target": "fx.usd"}],
        "dependencies": ["spies:asset:walter-model", "spies:asset:walter-rig@published",
                         "spies:asset:walter-model@3"],
        "labels": ["published", "published", "final"],
    })
    return records


RECORDS = _records()


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _contents(records: list[dict[str, Any]]) -> list[bytes]:
    out = {}
    for r in records:
        number = r.get("number", 1)
        for e in r.get("manifest", []):
            if e["type"] == "file":
                out[e["sha256"]] = file_content(r["pri"], number, e["path"])
    for key, data in out.items():
        assert sha(data) == key
    return list(out.values())


async def _upload_all(api: httpx.AsyncClient, contents: list[bytes]) -> None:
    for data in contents:
        r = await api.put(f"/blobs/{hashlib.sha256(data).hexdigest()}", content=data)
        assert r.status_code in (200, 201), r.text


async def _answers(api: httpx.AsyncClient) -> dict[str, Any]:
    """Every answer of the read API over the whole store."""
    out: dict[str, Any] = {}

    async def get(path: str, **params: Any) -> Any:
        r = await api.get(path, params=params)
        assert r.status_code == 200, (path, r.text)
        answer = out[f"{path}?{params}"] = r.json()
        return answer

    found = (await get("/products", limit=100_000))["products"]
    assert found
    for p in found:
        pri = p["pri"]
        await get(f"/products/{pri}")
        for v in (await get(f"/products/{pri}/versions"))["versions"]:
            await get(f"/products/{pri}/versions/{v['number']}")
        for label in (await get(f"/products/{pri}/labels"))["labels"]:
            await get(f"/products/{pri}/labels/{label}/history")
            await get(f"/products/{pri}/versions/{label}")
    now = await get("/index")
    assert now.pop("as_of")  # the time of the request
    await get("/index", as_of="2025-01-01T00:00:00Z")
    await get("/index", as_of="2023-11-14T22:13:20.050000Z")
    await get("/index", prefix="spies:100", as_of="2025-01-01T00:00:00Z")
    roots = [p["pri"] for p in found if p["pri"].endswith("-comp")] + ["spies:999:10-fx@final"]
    r = await api.post("/closure", json={"roots": roots, "as_of": "2025-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    out["closure"] = r.json()
    events = (await get("/events", limit=1000))["events"]
    for e in events:
        assert e.pop("time")  # the time the event was made: the publish's, or the import's
    return out


@contextlib.contextmanager
def _second_db(db_url: str | None) -> Iterator[str | None]:
    if db_url is None:
        yield None
    else:
        with pg_database(db_url) as url:
            yield url


def _import_main(args: list[str]) -> int:
    return _import.main(args)


@pytest.mark.anyio
async def test_imported_store_answers_like_published(tmp_path: Path, db_url: str | None) -> None:
    contents = _contents(RECORDS)
    with _second_db(db_url) as other_url:
        published_app = create_app(ServiceConfig(data_dir=tmp_path / "published", db_url=other_url))
        imported_app = create_app(ServiceConfig(data_dir=tmp_path / "imported", db_url=db_url))
        try:
            async with client(published_app) as api:
                await _upload_all(api, contents)
                for r in RECORDS:
                    body = {"manifest": r["manifest"], "dependencies": r["dependencies"], "labels": r["labels"],
                            "message": r["message"], "author": r.get("author"), "at": r["created_at"]}
                    resp = await api.post(f"/products/{r['pri']}/versions", json=body)
                    assert resp.status_code == 201, resp.text
                published = await _answers(api)
            async with client(imported_app) as api:
                await _upload_all(api, contents)
                path = tmp_path / "history.jsonl"
                path.write_text(_jsonl(RECORDS))
                args = [str(path), "--data", str(tmp_path / "imported")] + (["--db", db_url] if db_url else [])
                assert _import_main(args) == 0
                imported = await _answers(api)
        finally:
            published_app.state.pvc.db.dispose()
            imported_app.state.pvc.db.dispose()
    assert imported.keys() == published.keys()
    for key in published:
        assert imported[key] == published[key], key


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                    for t in metadata.sorted_tables}
    finally:
        engine.dispose()


def _blob_line(data: bytes) -> dict[str, Any]:
    return {"path": "a.usd", "type": "file", "size": len(data), "sha256": sha(data), "mode": 0o644}


GOOD = {"pri": "spies:asset:walter-model", "created_at": "2023-12-01T00:00:00Z", "manifest": []}
BAD_LINES = {
    "not json": ("{nope", "not a JSON object"),
    "malformed pri": ({**GOOD, "pri": "spies asset"}, "spies asset"),
    "unknown field": ({**GOOD, "at": "now"}, "unknown field"),
    "bad manifest": ({**GOOD, "manifest": [{"path": "../x", "type": "file", "size": 1, "sha256": "0" * 64}]},
                     "../x"),
    "bad sha": ({**GOOD, "manifest": [{"path": "x", "type": "file", "size": 1, "sha256": "xyz"}]}, "sha256"),
    "number gap": ({**GOOD, "number": 7}, "the next is 5"),
    "number repeated": ({**GOOD, "number": 4}, "the next is 5"),
    "time going back": ({**GOOD, "created_at": "2020-01-01T00:00:00Z"}, "earlier than the newest version"),
    "future": ({**GOOD, "created_at": "2999-01-01T00:00:00Z"}, "in the future"),
    "missing dependency": ({**GOOD, "dependencies": ["spies:asset:walter-rig@9"]}, "does not exist"),
    "unknown dependency product": ({**GOOD, "dependencies": ["nope:x-y@1"]}, "no product nope:x-y"),
    "dependency later than the version": (
        {**GOOD, "pri": "spies:900:10-lgt", "created_at": "2023-11-14T22:13:20.005Z",
         "dependencies": ["spies:asset:walter-model@3"]}, "does not exist as of"),
    "dependency before its product": (
        {**GOOD, "pri": "spies:900:10-lgt", "created_at": "2023-11-14T22:13:20Z",
         "dependencies": ["spies:asset:walter-model@1"]}, "no product spies:asset:walter-model as of"),
    "dependency on a later line": (
        {**GOOD, "dependencies": ["spies:800:10-comp@1"]}, "no product spies:800:10-comp"),
    "latest label": ({**GOOD, "labels": ["latest"]}, "cannot be set"),
    "bad label": ({**GOOD, "labels": ["Bad"]}, "a label is"),
    "missing blob": ({**GOOD, "manifest": [_blob_line(b"never uploaded")]}, "not uploaded"),
    "unknown workspace": ({**GOOD, "workspace": {"name": "nobody", "revision": 1}}, "no workspace 'nobody'"),
    "malformed workspace": ({**GOOD, "workspace": {"name": "lgt"}}, "'workspace' must be"),
    "workspace name": ({**GOOD, "workspace": {"name": "-x", "revision": 1}}, "a workspace name is"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_is_refused_and_nothing_is_written(tmp_path: Path, db_url: str | None, case: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    db_args = ["--db", db_url] if db_url else []
    url = normalize_db_url(db_url, data_dir)
    first = tmp_path / "first.jsonl"
    first.write_text(_jsonl(list(history(6, 3, files=1, seed=3))))
    assert _import_main([str(first), "--data", str(data_dir), "--allow-missing-blobs"] + db_args) == 0
    before = _dump(url)

    bad, expected = BAD_LINES[case]
    # good lines (new products, new versions of stored ones, dependencies on both) around the bad one
    lines = [
        json.dumps({"pri": "spies:asset:walter-model", "created_at": "2023-11-20T00:00:00Z", "number": 4}),
        json.dumps({"pri": "spies:800:10-anim", "created_at": "2023-11-21T00:00:00Z",
                    "dependencies": ["spies:asset:walter-model@4", "spies:asset:walter-rig@3"]}),
        bad if isinstance(bad, str) else json.dumps(bad),
        json.dumps({"pri": "spies:800:10-comp", "created_at": "2023-12-02T00:00:00Z"}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert _import_main([str(path), "--data", str(data_dir), "--batch", "1"] + db_args) == _import.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "line 3:" in err and expected in err and "nothing was imported" in err, err
    assert _dump(url) == before

    # the same file without the bad line goes in
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    assert _import_main([str(path), "--data", str(data_dir)] + db_args) == 0
    assert _dump(url) != before


def test_pvc_import_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """``pvc import`` runs the ``import`` plugin (the entry point needs ``pip install -e`` to be seen)."""
    monkeypatch.setattr(cli, "plugin", lambda name, needs: {"import": _import.main}[name])
    path = tmp_path / "h.jsonl"
    path.write_text(_jsonl(list(history(5, 2, seed=1))))
    assert cli.main(["import", str(path), "--data", str(tmp_path / "d")]) == _import.EXIT_REFUSED
    assert "not uploaded" in capsys.readouterr().err
    assert cli.main(["import", str(path), "--data", str(tmp_path / "d"), "--allow-missing-blobs"]) == 0
    assert "imported 10 versions (5 new products" in capsys.readouterr().out
    # usage errors
    assert cli.main(["import", str(tmp_path / "missing.jsonl"), "--data", str(tmp_path / "d")]) == 2
    assert _import.main([str(path)]) == 2  # no --data
    assert _import.main([str(path), "--data", str(tmp_path), "--db", "mysql://x/y"]) == 2


def test_import_into_running_service(tmp_path: Path, db_url: str | None) -> None:
    data_dir = tmp_path / "data"
    db_args = ["--db", db_url] if db_url else []
    records = list(history(10, 2, seed=5))
    with running_service(data_dir, db_url=db_url) as service, httpx.Client(base_url=service.api, timeout=30) as http:
        r = http.post("/products/spies:asset:walter-model/versions", json={"manifest": [], "at": "2023-01-01T00:00:00Z"})
        assert r.status_code == 201, r.text
        cursor = http.get("/events").json()["cursor"]
        woke: dict[str, Any] = {}

        def long_poll() -> None:
            woke["answer"] = http.get("/events", params={"after": cursor, "timeout": 30}).json()

        poller = threading.Thread(target=long_poll)
        poller.start()
        # the running service's product gets its next versions from the file
        for record in records:
            if record["pri"] == "spies:asset:walter-model":
                record["number"] += 1
        proc = subprocess.run(
            [sys.executable, "-m", "pvc_service._import", "-", "--data", str(data_dir), "--allow-missing-blobs",
             *db_args], check=False, input=_jsonl(records), capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert proc.returncode == 0, proc.stderr
        poller.join(timeout=40)
        assert not poller.is_alive()
        assert woke["answer"]["events"][0]["kind"] == "publish"

        found = http.get("/products", params={"limit": 1000}).json()["products"]
        assert len(found) == 10
        assert http.get("/products/spies:asset:walter-model").json()["latest"] == 3
        version = http.get("/products/spies:100:10-lgt/versions/published").json()
        assert version["number"] == 2
        graph = http.get("/index").json()
        assert len(graph["products"]) == 10
        # the service keeps publishing after the import
        r = http.post("/products/spies:100:10-comp/versions", json={"manifest": []})
        assert r.status_code == 201 and r.json()["number"] == 3, r.text


@pytest.mark.slow
def test_import_100k_products(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with path.open("w") as out:
        for record in history(100_000, 3, files=2, seed=1):
            out.write(json.dumps(record) + "\n")
    assert _import_main([str(path), "--data", str(tmp_path / "d"), "--allow-missing-blobs"]) == 0


@pytest.mark.anyio
async def test_label_dependencies_see_stored_and_imported_moves(app: Any, api: httpx.AsyncClient) -> None:
    """A label moved in the store after a version of the file wins from its move's time on."""
    pri = "spies:asset:walter-model"
    for at in ("2023-01-01T00:00:00Z", "2023-02-01T00:00:00Z"):
        r = await api.post(f"/products/{pri}/versions", json={"manifest": [], "at": at, "labels": ["approved"]})
        assert r.status_code == 201, r.text
    r = await api.put(f"/products/{pri}/labels/approved", json={"version": 1})  # moved now
    assert r.status_code == 200, r.text
    lines = [
        {"pri": pri, "created_at": "2023-03-01T00:00:00Z", "labels": ["approved"]},  # v3, approved at March
        {"pri": "spies:100:10-anim", "created_at": "2023-04-01T00:00:00Z", "dependencies": [f"{pri}@approved"]},
        {"pri": "spies:100:10-lgt", "dependencies": [f"{pri}@approved", "spies:100:10-anim"]},  # now
    ]
    report = _import.import_history(app.state.pvc.db, [json.dumps(x) for x in lines])
    assert report.versions == 3 and report.new_products == 2
    anim = (await api.get("/products/spies:100:10-anim/versions/1")).json()
    lgt = (await api.get("/products/spies:100:10-lgt/versions/1")).json()
    assert anim["dependencies"] == [f"{pri}@3"]
    assert lgt["dependencies"] == [f"{pri}@1", "spies:100:10-anim@1"]
    assert (await api.get(f"/products/{pri}/versions")).json()["versions"][-1]["number"] == 3


@pytest.mark.anyio
async def test_import_records_workspaces(app: Any, api: httpx.AsyncClient) -> None:
    """A line's ``workspace`` is checked against the store's workspaces and answered like a publish's."""
    for outputs in (["spies:100:10-lgt"], ["spies:100:10-lgt", "spies:100:10-comp"]):
        r = await api.put("/workspaces/lgt", json={"outputs": outputs})
        assert r.status_code == 200, r.text
    lines = [
        {"pri": "spies:100:10-lgt", "workspace": {"name": "lgt", "revision": 1}},
        {"pri": "spies:100:10-lgt"},
        {"pri": "spies:100:10-comp", "workspace": {"name": "lgt", "revision": 2}},
        {"pri": "spies:100:10-lgt", "workspace": {"name": "lgt", "revision": 1}},
    ]
    report = _import.import_history(app.state.pvc.db, [json.dumps(x) for x in lines])
    assert report.versions == 4
    listed = (await api.get("/products/spies:100:10-lgt/versions")).json()["versions"]
    assert [v["workspace"] for v in listed] == [{"name": "lgt", "revision": 1}, None, {"name": "lgt", "revision": 1}]
    comp = (await api.get("/products/spies:100:10-comp/versions/1")).json()
    assert comp["workspace"] == {"name": "lgt", "revision": 2}
    # a revision the store lacks refuses the line, and nothing of the file is written
    with pytest.raises(_import.ImportRefused, match="line 2: workspace 'lgt' has no revision 3"):
        _import.import_history(app.state.pvc.db, [json.dumps(lines[1]),
                                                  json.dumps({**lines[0], "workspace": {"name": "lgt", "revision": 3}})])
    assert len((await api.get("/products/spies:100:10-lgt/versions")).json()["versions"]) == 3
