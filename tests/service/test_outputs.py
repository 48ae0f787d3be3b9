"""Workspace outputs, service side: the ``outputs`` spec field, ``GET /outputs/{pri}`` and version origins.

Every test runs on SQLite and PostgreSQL (the ``db_url`` fixture behind ``api``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, func, select

from pvc_service._db import normalize_db_url
from pvc_service._schema import version_origins, workspace_revisions, workspaces

from .conftest import AppFactory, client
from .helpers import error_code, publish

pytestmark = pytest.mark.anyio

# underscores on purpose: the service matches names in stored JSON text, where '_' must not be a wildcard
SHOT = "spies:100:10-lgt:walter_key"
COMP = "spies:100:10-comp:main_v"
ASSET = "spies:asset-walter_model"


async def _put(api: httpx.AsyncClient, name: str, **spec: Any) -> dict[str, Any]:
    r = await api.put(f"/workspaces/{name}", json=spec)
    assert r.status_code == 200, r.text
    return r.json()


async def _declared(api: httpx.AsyncClient, pri: str, as_of: str | None = None) -> dict[str, Any]:
    r = await api.get(f"/outputs/{pri}", params={} if as_of is None else {"as_of": as_of})
    assert r.status_code == 200, r.text
    return r.json()


def _names(answer: dict[str, Any]) -> list[str]:
    return [w["name"] for w in answer["workspaces"]]


async def test_outputs_are_normalized_and_kept_per_revision(api: httpx.AsyncClient) -> None:
    first = await _put(api, "lgt", roots=[ASSET], outputs=[SHOT, COMP, SHOT], author="kim")
    assert first["outputs"] == [SHOT, COMP]  # each once, in the order given
    second = await _put(api, "lgt", roots=[ASSET], outputs=[COMP])
    assert second["revision"] == 2 and second["outputs"] == [COMP]
    assert (await api.get("/workspaces/lgt")).json()["outputs"] == [COMP]
    then = (await api.get("/workspaces/lgt", params={"as_of": first["changed_at"]})).json()
    assert then["revision"] == 1 and then["outputs"] == [SHOT, COMP]
    listed = (await api.get("/workspaces")).json()["workspaces"]
    assert [(w["name"], w["outputs"]) for w in listed] == [("lgt", [COMP])]
    assert (await api.delete("/workspaces/lgt")).status_code == 204
    history = (await api.get("/workspaces/lgt/history")).json()["history"]
    assert [(h["revision"], h["outputs"], h["deleted"]) for h in history] == [
        (1, [SHOT, COMP], False), (2, [COMP], False), (3, [COMP], True)]
    # no outputs given: none declared
    assert (await _put(api, "plain", roots=[ASSET]))["outputs"] == []


@pytest.mark.parametrize(("output", "code", "says"), [
    (f"{SHOT}@3", "invalid_pri", "not a version"),
    (f"{SHOT}@approved", "invalid_pri", "not a version"),
    ("approved", "invalid_pri", "no '-'"),
    ("spies lgt", "invalid_pri", "output"),
    (3, "invalid", "outputs"),
])
async def test_an_output_is_a_product_not_a_version(api: httpx.AsyncClient, output: Any, code: str,
                                                    says: str) -> None:
    await _put(api, "lgt", outputs=[COMP])
    r = await api.put("/workspaces/lgt", json={"outputs": [COMP, output]})
    assert r.status_code == (422 if code == "invalid" else 400) and error_code(r) == code, r.text
    assert says in r.json()["error"]["message"]
    history = (await api.get("/workspaces/lgt/history")).json()["history"]
    assert [h["outputs"] for h in history] == [[COMP]]  # nothing written


async def test_revisions_stored_before_outputs_declare_none(app: FastAPI, api: httpx.AsyncClient) -> None:
    # a revision written by a service that knew no outputs: its spec has no such key
    old_spec = {"roots": [ASSET], "strategy": "latest", "pin": None, "prefer": [], "overrides": []}
    with app.state.pvc.db.write() as conn:
        ws_id = conn.execute(workspaces.insert().values(name="old", created_us=1_000_000)).inserted_primary_key[0]
        conn.execute(workspace_revisions.insert().values(workspace_id=ws_id, revision=1, changed_us=1_000_000,
                                                         author="kim", deleted=False, spec=old_spec))
    assert (await api.get("/workspaces/old")).json()["outputs"] == []
    assert [w["outputs"] for w in (await api.get("/workspaces")).json()["workspaces"]] == [[]]
    assert (await _declared(api, ASSET))["workspaces"] == []
    assert (await api.delete("/workspaces/old")).status_code == 204  # a revision copied from the old spec
    history = (await api.get("/workspaces/old/history")).json()["history"]
    assert [(h["revision"], h["outputs"], h["deleted"]) for h in history] == [(1, [], False), (2, [], True)]


async def test_who_declared_an_output(api: httpx.AsyncClient) -> None:
    # created out of name order: the answer is sorted by name all the same
    lgt = await _put(api, "lgt_walter", roots=[ASSET], outputs=[SHOT], author="kim")
    comp = await _put(api, "comp", roots=[SHOT], outputs=[COMP, SHOT], author="lee")
    await _put(api, "anim", roots=[SHOT], overrides=[f"{ASSET}@1"], outputs=[COMP])  # reads SHOT, makes COMP
    dropped = await _put(api, "dropped", outputs=[SHOT])
    await _put(api, "dropped", outputs=[COMP])
    gone = await _put(api, "gone", outputs=[SHOT])
    assert (await api.delete("/workspaces/gone")).status_code == 204

    found = await _declared(api, SHOT)
    assert found == {"pri": SHOT, "workspaces": [
        {"name": "comp", "revision": 1, "changed_at": comp["changed_at"], "author": "lee"},
        {"name": "lgt_walter", "revision": 1, "changed_at": lgt["changed_at"], "author": "kim"},
    ]}
    assert _names(await _declared(api, COMP)) == ["anim", "comp", "dropped"]

    # as of a time: each workspace's newest revision then
    assert _names(await _declared(api, SHOT, "2000-01-01T00:00:00Z")) == []
    assert _names(await _declared(api, SHOT, lgt["changed_at"])) == ["lgt_walter"]
    assert _names(await _declared(api, SHOT, dropped["changed_at"])) == ["comp", "dropped", "lgt_walter"]
    assert _names(await _declared(api, SHOT, gone["changed_at"])) == ["comp", "gone", "lgt_walter"]
    assert _names(await _declared(api, COMP, lgt["changed_at"])) == []

    # a product nobody declared, published or not, is no error
    assert await _declared(api, "nobody:1-x") == {"pri": "nobody:1-x", "workspaces": []}
    await publish(api, ASSET)
    assert await _declared(api, ASSET) == {"pri": ASSET, "workspaces": []}

    for bad, code in ((f"{SHOT}@1", "invalid_pri"), (f"{SHOT}@approved", "invalid_pri"), ("nodash", "invalid_pri")):
        r = await api.get(f"/outputs/{bad}")
        assert r.status_code == 400 and error_code(r) == code, r.text
    r = await api.get(f"/outputs/{SHOT}", params={"as_of": "last tuesday"})
    assert r.status_code == 400 and error_code(r) == "invalid_time"


async def test_outputs_follow_renames(api: httpx.AsyncClient) -> None:
    old, new = "spies:100:10-lgt:key_old", "spies:100:10-lgt:key_new"
    await publish(api, old)
    before = await _put(api, "before", outputs=[old])
    # declared under the new name while that was no product's name yet (a product to come)
    early = await _put(api, "early", outputs=[new])
    r = await api.post(f"/products/{old}/rename", json={"new_pri": new})
    assert r.status_code == 200, r.text
    await _put(api, "after", outputs=[new])
    await _put(api, "other", outputs=[COMP])
    # either name of the product finds every declaration, answered with the canonical name
    assert await _declared(api, new) == await _declared(api, old)
    found = await _declared(api, old)
    assert found["pri"] == new and _names(found) == ["after", "before", "early"]
    # before the rename the two names were two products
    then = await _declared(api, old, early["changed_at"])
    assert then["pri"] == old and _names(then) == ["before"]
    then = await _declared(api, new, early["changed_at"])
    assert then["pri"] == new and _names(then) == ["early"]
    assert _names(await _declared(api, old, before["changed_at"])) == ["before"]


async def _version_count(api: httpx.AsyncClient, pri: str) -> int:
    r = await api.get(f"/products/{pri}/versions")
    return 0 if r.status_code == 404 else len(r.json()["versions"])


def _origin_rows(app: FastAPI) -> list[tuple[Any, ...]]:
    with app.state.pvc.db.read() as conn:
        return [tuple(r) for r in conn.execute(select(version_origins).order_by(version_origins.c.version_id))]


async def test_a_version_records_its_workspace(app: FastAPI, api: httpx.AsyncClient) -> None:
    await _put(api, "lgt", roots=[ASSET], outputs=[SHOT])
    await _put(api, "lgt", roots=[ASSET], outputs=[SHOT, COMP])
    origin = {"name": "lgt", "revision": 1}  # an older revision: the one the mount ran
    v1 = await publish(api, SHOT, workspace=origin)
    assert v1["workspace"] == origin
    v2 = await publish(api, SHOT, {"b": b"second"})
    assert v2["workspace"] is None
    v3 = await publish(api, SHOT, {"c": b"third"}, workspace={"name": "lgt", "revision": 2})
    assert v3["workspace"] == {"name": "lgt", "revision": 2}

    assert (await api.get(f"/products/{SHOT}/versions/1")).json()["workspace"] == origin
    assert (await api.get(f"/products/{SHOT}/versions/2")).json()["workspace"] is None
    assert (await api.get(f"/products/{SHOT}/versions/latest")).json()["workspace"] == v3["workspace"]
    listed = (await api.get(f"/products/{SHOT}/versions")).json()["versions"]
    assert [v["workspace"] for v in listed] == [origin, None, v3["workspace"]]
    # the origin of a version stays what it was when the workspace changes or goes
    assert (await api.delete("/workspaces/lgt")).status_code == 204
    assert (await api.get(f"/products/{SHOT}/versions/1")).json()["workspace"] == origin
    assert [row[1:] for row in _origin_rows(app)] == [("lgt", 1), ("lgt", 2)]


async def test_a_wrong_workspace_writes_nothing(app: FastAPI, api: httpx.AsyncClient) -> None:
    await _put(api, "lgt", outputs=[SHOT])
    await _put(api, "lgt", outputs=[SHOT, COMP])
    await _put(api, "gone", outputs=[SHOT])
    assert (await api.delete("/workspaces/gone")).status_code == 204
    await _put(api, "back", outputs=[SHOT])
    assert (await api.delete("/workspaces/back")).status_code == 204
    await _put(api, "back", outputs=[SHOT])  # revision 2 is the deletion, 3 a spec again
    events = len((await api.get("/events")).json()["events"])
    cases: list[tuple[Any, int, str, str]] = [
        ({"name": "nobody", "revision": 1}, 404, "not_found", "no workspace 'nobody'"),
        ({"name": "lgt", "revision": 3}, 404, "not_found", "no revision 3 (its newest is 2)"),
        ({"name": "gone", "revision": 1}, 404, "not_found", "deleted"),
        ({"name": "back", "revision": 2}, 404, "not_found", "deletion"),
        ({"name": ".hidden", "revision": 1}, 400, "invalid", "workspace name"),
        ({"name": "lgt", "revision": 0}, 422, "invalid", "revision"),
        ({"name": "lgt"}, 422, "invalid", "revision"),
        ({"name": "lgt", "revision": 1, "extra": 1}, 422, "invalid", "extra"),
        ("lgt", 422, "invalid", "workspace"),
    ]
    for workspace, status, code, says in cases:
        r = await api.post(f"/products/{SHOT}/versions", json={"manifest": [], "workspace": workspace})
        assert r.status_code == status and error_code(r) == code, (workspace, r.text)
        assert says in r.json()["error"]["message"], (workspace, r.text)
    # nothing was written: no product, no version, no origin, no event
    assert await _version_count(api, SHOT) == 0
    assert _origin_rows(app) == []
    assert len((await api.get("/events")).json()["events"]) == events
    # the same publish with a revision that exists goes in, also on a product that has versions
    assert (await publish(api, SHOT, workspace={"name": "back", "revision": 3}))["workspace"]["revision"] == 3
    r = await api.post(f"/products/{SHOT}/versions", json={"manifest": [], "workspace": {"name": "lgt", "revision": 9}})
    assert r.status_code == 404 and await _version_count(api, SHOT) == 1
    assert len(_origin_rows(app)) == 1


async def test_a_store_from_before_origins_gets_the_table(tmp_path: Path, db_url: str | None,
                                                         make_app: AppFactory) -> None:
    first = make_app()
    async with client(first) as api:
        await publish(api, SHOT)
    first.state.pvc.db.dispose()
    # the database as a service without origins left it: no version_origins table
    engine = create_engine(normalize_db_url(db_url, tmp_path / "data"))
    try:
        version_origins.drop(engine)
    finally:
        engine.dispose()
    second = make_app()  # create_schema adds the missing table, keeping what is stored
    async with client(second) as api:
        assert (await api.get(f"/products/{SHOT}/versions/1")).json()["workspace"] is None
        await _put(api, "lgt", outputs=[SHOT])
        v2 = await publish(api, SHOT, {"b": b"b"}, workspace={"name": "lgt", "revision": 1})
        assert v2["number"] == 2 and v2["workspace"] == {"name": "lgt", "revision": 1}
    with second.state.pvc.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(version_origins)).scalar() == 1
