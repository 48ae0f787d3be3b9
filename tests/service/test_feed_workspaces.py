"""The change feed (with long-poll wake-ups), workspaces with revisions, and snapshots."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import httpx
import pytest

from .conftest import AppFactory, client
from .helpers import error_code, publish

pytestmark = pytest.mark.anyio

PRI = "spies:100:10-lgt:walter"
# a guard against hanging, far above any wake-up: tests never assert timings
HANG_GUARD = 50


async def test_feed_records_every_kind(api: httpx.AsyncClient) -> None:
    await publish(api, "spies:asset-tex", {"t": b"t"})
    await publish(api, PRI, dependencies=["spies:asset-tex@1"], labels=["published"])
    await api.put(f"/products/{PRI}/labels/approved", json={"version": 1})
    await api.delete(f"/products/{PRI}/labels/approved")
    await api.post(f"/products/{PRI}/rename", json={"new_pri": "spies:100:10-lgt:walt"})
    await api.put("/workspaces/walter", json={"roots": [PRI]})
    snap = (await api.post("/snapshots", json={"record": {"a": 1}})).json()

    feed = (await api.get("/events")).json()
    kinds = [e["kind"] for e in feed["events"]]
    assert kinds == ["publish", "publish", "label", "label", "label", "rename", "workspace", "snapshot"]
    ids = [e["id"] for e in feed["events"]]
    assert ids == sorted(set(ids)) and feed["cursor"] == ids[-1]
    publish_event = feed["events"][1]
    assert publish_event["pri"] == PRI and publish_event["number"] == 1
    assert publish_event["dependencies"] == ["spies:asset-tex@1"] and publish_event["created_at"]
    assert feed["events"][2] | {"id": 0, "time": ""} == {"id": 0, "time": "", "kind": "label", "pri": PRI,
                                                          "label": "published", "number": 1}
    assert feed["events"][4]["number"] is None
    assert feed["events"][5]["old_pri"] == PRI and feed["events"][5]["pri"] == "spies:100:10-lgt:walt"
    assert feed["events"][6]["name"] == "walter" and feed["events"][6]["revision"] == 1
    assert feed["events"][7]["snapshot_id"] == snap["id"] and feed["events"][7]["pri"] is None

    page = (await api.get("/events", params={"after": ids[2], "limit": 2})).json()
    assert [e["id"] for e in page["events"]] == ids[3:5] and page["cursor"] == ids[4]
    empty = (await api.get("/events", params={"after": ids[-1]})).json()
    assert empty == {"events": [], "cursor": ids[-1]}


async def test_long_poll_wakes_on_publish(make_app: AppFactory) -> None:
    # the database re-check is set far beyond the guard: only the in-process
    # notification can end the wait
    app = make_app(event_poll_seconds=3600)
    async with client(app) as api:
        await publish(api, PRI)
        cursor = (await api.get("/events")).json()["cursor"]
        got: dict[str, Any] = {}

        async def poll() -> None:
            r = await api.get("/events", params={"after": cursor, "timeout": 60})
            got.update(r.json())

        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                while app.state.pvc.notifier.waiters == 0:  # until the poll really waits
                    await anyio.sleep(0.005)
                assert not got
                await publish(api, PRI, {"x": b"second"})
        assert [e["kind"] for e in got["events"]] == ["publish"]
        assert got["events"][0]["number"] == 2 and got["cursor"] > cursor


async def test_long_poll_sees_another_process(make_app: AppFactory) -> None:
    # two apps over one database stand for two service processes: the waiting
    # one learns of the other's publish by re-reading the database
    waiting_app = make_app(event_poll_seconds=0.05)
    other_app = make_app()
    async with client(waiting_app) as waiting, client(other_app) as other:
        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                result: dict[str, Any] = {}

                async def poll() -> None:
                    result.update((await waiting.get("/events", params={"timeout": 60})).json())

                tg.start_soon(poll)
                while waiting_app.state.pvc.notifier.waiters == 0:
                    await anyio.sleep(0.005)
                await publish(other, PRI)
        assert [e["kind"] for e in result["events"]] == ["publish"]


async def test_feed_timeout_and_bad_parameters(api: httpx.AsyncClient) -> None:
    r = await api.get("/events", params={"timeout": 0.01})
    assert r.json() == {"events": [], "cursor": 0}
    for params in ({"timeout": 61}, {"after": -1}, {"limit": 0}, {"after": "x"}, {"after": 2**64},
                   {"timeout": "nan"}):
        r = await api.get("/events", params=params)
        assert r.status_code == 422 and error_code(r) == "invalid", params


async def test_workspace_revisions_and_history(api: httpx.AsyncClient) -> None:
    spec = {"roots": [PRI, "spies:asset-model@3"], "strategy": "latest", "pin": None,
            "prefer": ["approved", "published"], "overrides": ["spies:asset-tex@2"], "outputs": [PRI]}
    r = await api.put("/workspaces/walter", json=spec | {"author": "kim"})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first == spec | {"name": "walter", "revision": 1, "changed_at": first["changed_at"],
                            "author": "kim", "deleted": False}
    second = (await api.put("/workspaces/walter", json=spec | {"pin": "2020-01-01T12:00:00+01:00"})).json()
    assert second["revision"] == 2 and second["pin"] == "2020-01-01T11:00:00.000000Z"

    assert (await api.get("/workspaces/walter")).json() == second
    then = (await api.get("/workspaces/walter", params={"as_of": first["changed_at"]})).json()
    assert then == first
    await api.put("/workspaces/lance", json={"roots": []})
    listed = (await api.get("/workspaces")).json()["workspaces"]
    assert [w["name"] for w in listed] == ["lance", "walter"] and listed[1]["revision"] == 2

    assert (await api.delete("/workspaces/walter")).status_code == 204
    assert (await api.get("/workspaces/walter")).status_code == 404
    assert (await api.delete("/workspaces/walter")).status_code == 404
    assert [w["name"] for w in (await api.get("/workspaces")).json()["workspaces"]] == ["lance"]
    history = (await api.get("/workspaces/walter/history")).json()["history"]
    assert [(h["revision"], h["deleted"]) for h in history] == [(1, False), (2, False), (3, True)]
    assert history[2]["roots"] == spec["roots"]
    # re-creating continues the revisions
    again = (await api.put("/workspaces/walter", json={"roots": [PRI]})).json()
    assert again["revision"] == 4 and again["strategy"] == "latest" and again["overrides"] == []
    assert again["outputs"] == []


async def test_workspace_bad_input(api: httpx.AsyncClient) -> None:
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("walter", {"roots": ["no-dash-here@x-y"]}, "invalid_pri"),
        ("walter", {"roots": ["nodash"]}, "invalid_pri"),
        ("walter", {"overrides": [PRI]}, "invalid_pri"),
        ("walter", {"overrides": [f"{PRI}@published"]}, "invalid_pri"),
        ("walter", {"prefer": ["Approved"]}, "invalid_pri"),
        ("walter", {"pin": "last tuesday"}, "invalid_time"),
        ("walter", {"strategy": "Fancy Strategy"}, "invalid"),
        ("walter", {"rootz": []}, "invalid"),
        (".hidden", {}, "invalid"),
    ]
    for name, body, code in bad:
        r = await api.put(f"/workspaces/{name}", json=body)
        assert r.status_code in (400, 422) and error_code(r) == code, (body, r.text)
    assert (await api.get("/workspaces")).json() == {"workspaces": []}
    assert (await api.get("/events")).json()["events"] == []
    assert (await api.get("/workspaces/nobody")).status_code == 404
    assert (await api.get("/workspaces/nobody/history")).status_code == 404


async def test_relative_pin_is_fixed_when_written(api: httpx.AsyncClient) -> None:
    ws = (await api.put("/workspaces/w", json={"pin": "-3d"})).json()
    assert ws["pin"].endswith("Z") and ws["pin"] < ws["changed_at"]
    assert (await api.get("/workspaces/w")).json()["pin"] == ws["pin"]


async def test_snapshots_are_content_addressed(api: httpx.AsyncClient) -> None:
    record = {"workspace": "walter", "resolved": {PRI: 3, "spies:asset-tex": 2}, "note": "été"}
    r = await api.post("/snapshots", json={"record": record})
    assert r.status_code == 201
    snap = r.json()
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert snap["id"] == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert snap["record"] == record
    # the same record (keys in another order) is the same snapshot
    again = await api.post("/snapshots", json={"record": dict(reversed(list(record.items())))})
    assert again.status_code == 200 and again.json() == snap
    assert (await api.get(f"/snapshots/{snap['id']}")).json() == snap
    assert len([e for e in (await api.get("/events")).json()["events"] if e["kind"] == "snapshot"]) == 1
    other = (await api.post("/snapshots", json={"record": record | {"note": "x"}})).json()
    assert other["id"] != snap["id"]

    assert (await api.get("/snapshots/0123456789abcdef")).status_code == 404
    r = await api.get("/snapshots/../../etc")
    assert r.status_code in (400, 404)
    r = await api.get("/snapshots/XYZ")
    assert r.status_code == 400 and error_code(r) == "invalid"
    r = await api.post("/snapshots", json={"record": [1, 2]})
    assert r.status_code == 422 and error_code(r) == "invalid"
