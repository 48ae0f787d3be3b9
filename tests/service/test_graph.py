"""``/index`` and ``/closure``: the Graph shape, closures over every visible version, as of a time."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from prodfs.resolution.graph import Graph

from .helpers import StatementCount, error_code, publish

pytestmark = pytest.mark.anyio

TEX = "spies:asset-tex:walter"
MODEL = "spies:asset-model:walter"
RIG = "spies:asset-rig:walter"
LGT = "spies:100:10-lgt:walter"
OTHER = "heist:1-anim:main"


async def _store(api: httpx.AsyncClient) -> None:
    await publish(api, TEX, {"t": b"tex1"}, at="2020-01-01T00:00:00Z")
    await publish(api, MODEL, {"m": b"model1"}, dependencies=[f"{TEX}@1"], at="2020-01-02T00:00:00Z",
                  labels=["published"])
    await publish(api, RIG, {"r": b"rig1"}, at="2020-01-03T00:00:00Z")
    await publish(api, LGT, {"l": b"lgt1"}, dependencies=[f"{MODEL}@1"], at="2020-01-04T00:00:00Z")
    # a later version of the lighting depends on the rig instead
    await publish(api, LGT, {"l": b"lgt2"}, dependencies=[f"{RIG}@1", f"{MODEL}@published"],
                  at="2020-02-01T00:00:00Z")
    await publish(api, OTHER, {"o": b"other"})


async def test_index_is_the_whole_store(api: httpx.AsyncClient) -> None:
    await _store(api)
    graph = (await api.get("/index")).json()
    assert list(graph["products"]) == sorted([TEX, MODEL, RIG, LGT, OTHER])
    lgt = graph["products"][LGT]
    assert [v["number"] for v in lgt["versions"]] == [1, 2]
    assert lgt["versions"][0] == {"number": 1, "created_at": "2020-01-04T00:00:00.000000Z",
                                  "dependencies": [f"{MODEL}@1"]}
    # a label dependency is stored as the version it pointed at
    assert lgt["versions"][1]["dependencies"] == [f"{RIG}@1", f"{MODEL}@1"]
    assert graph["products"][MODEL]["labels"] == {"published": 1}
    assert graph["products"][MODEL]["created_at"] == "2020-01-02T00:00:00.000000Z"
    events = (await api.get("/events")).json()
    assert graph["cursor"] == events["cursor"] > 0
    # the daemon's reader accepts it
    parsed = Graph.from_json(graph)
    assert parsed.get(LGT) is not None and len(parsed) == 5


async def test_index_as_of_and_prefix(api: httpx.AsyncClient) -> None:
    await _store(api)
    old = (await api.get("/index", params={"as_of": "2020-01-10"})).json()
    assert list(old["products"]) == sorted([TEX, MODEL, RIG, LGT])
    assert [v["number"] for v in old["products"][LGT]["versions"]] == [1]
    assert old["as_of"] == "2020-01-10T23:59:59.999999Z"
    assets = (await api.get("/index", params={"prefix": "spies:asset-"})).json()
    assert list(assets["products"]) == sorted([TEX, MODEL, RIG])
    # dependencies leaving the prefix are still named
    lgt_only = (await api.get("/index", params={"prefix": "spies:100"})).json()
    assert lgt_only["products"][LGT]["versions"][1]["dependencies"] == [f"{RIG}@1", f"{MODEL}@1"]


async def test_closure_follows_every_visible_version(api: httpx.AsyncClient) -> None:
    await _store(api)
    r = await api.post("/closure", json={"roots": [f"{LGT}@1"]})
    assert r.status_code == 200, r.text
    graph = r.json()
    # a superset: rig is reachable through version 2 even though the root is @1
    assert set(graph["products"]) == {LGT, MODEL, TEX, RIG}
    assert graph["roots"] == [{"ref": f"{LGT}@1", "pri": LGT, "number": 1}]
    assert graph["products"][TEX]["versions"][0]["number"] == 1

    only_tex = (await api.post("/closure", json={"roots": [TEX]})).json()
    assert set(only_tex["products"]) == {TEX}
    assert only_tex["roots"] == [{"ref": TEX, "pri": TEX, "number": 1}]


async def test_closure_as_of_and_root_forms(api: httpx.AsyncClient) -> None:
    await _store(api)
    r = await api.post("/closure", json={"roots": [LGT, f"{MODEL}@published"], "as_of": "2020-01-20"})
    graph = r.json()
    assert set(graph["products"]) == {LGT, MODEL, TEX}
    assert graph["roots"] == [{"ref": LGT, "pri": LGT, "number": 1},
                              {"ref": f"{MODEL}@published", "pri": MODEL, "number": 1}]
    assert [v["number"] for v in graph["products"][LGT]["versions"]] == [1]


async def test_closure_after_rename_and_unknown_roots(api: httpx.AsyncClient) -> None:
    await _store(api)
    await api.post(f"/products/{TEX}/rename", json={"new_pri": "spies:asset:walter-tex"})
    graph = (await api.post("/closure", json={"roots": [MODEL]})).json()
    assert set(graph["products"]) == {MODEL, "spies:asset:walter-tex"}
    assert graph["products"]["spies:asset:walter-tex"]["aliases"] == [TEX]
    assert graph["products"][MODEL]["versions"][0]["dependencies"] == ["spies:asset:walter-tex@1"]
    for roots in ([f"{LGT}@9"], ["spies-unknown"], [f"{LGT}@approved"]):
        r = await api.post("/closure", json={"roots": roots})
        assert r.status_code == 404 and error_code(r) == "not_found", roots
    r = await api.post("/closure", json={"roots": ["not a pri"]})
    assert r.status_code == 400 and error_code(r) == "invalid_pri"
    r = await api.post("/closure", json={"roots": [], "depth": -1})
    assert r.status_code == 422
    r = await api.post("/closure", json={"roots": [LGT], "missing": "ignore"})
    assert r.status_code == 422
    # no roots: no products, and the cursor to follow the feed from (an empty mount's start)
    empty = (await api.post("/closure", json={"roots": []})).json()
    assert empty["products"] == {} and empty["roots"] == []
    assert empty["cursor"] == (await api.get("/events")).json()["cursor"]


async def test_closure_depth_and_missing_roots(api: httpx.AsyncClient) -> None:
    """What a mount asks when it first meets names: the products alone, unknown ones answered, not refused."""
    await _store(api)
    await api.post(f"/products/{TEX}/rename", json={"new_pri": "spies:asset:walter-tex"})
    body = {"roots": [LGT, "spies-unknown", TEX, f"{LGT}@9"], "depth": 0, "missing": "omit"}
    graph = (await api.post("/closure", json=body)).json()
    # the roots alone, versions, dependencies (named) and aliases included
    assert set(graph["products"]) == {LGT, "spies:asset:walter-tex"}
    assert graph["products"][LGT]["versions"][1]["dependencies"] == [f"{RIG}@1", f"{MODEL}@1"]
    assert graph["products"]["spies:asset:walter-tex"]["aliases"] == [TEX]
    assert graph["roots"] == [
        {"ref": LGT, "pri": LGT, "number": 2},
        {"ref": "spies-unknown", "pri": None, "number": None},
        {"ref": TEX, "pri": "spies:asset:walter-tex", "number": 1},
        {"ref": f"{LGT}@9", "pri": LGT, "number": None},  # the product is known, that version is not
    ]
    one = (await api.post("/closure", json={"roots": [LGT], "depth": 1})).json()
    assert set(one["products"]) == {LGT, MODEL, RIG}
    assert set((await api.post("/closure", json={"roots": [LGT], "depth": 2})).json()["products"]) == {
        LGT, MODEL, RIG, "spies:asset:walter-tex"}
    # as of a time before the product existed: unknown then
    old = (await api.post("/closure", json={"roots": [OTHER], "depth": 0, "missing": "omit",
                                             "as_of": "2020-01-10"})).json()
    assert old["products"] == {} and old["roots"] == [{"ref": OTHER, "pri": None, "number": None}]


async def test_closure_of_a_long_chain_is_complete(api: httpx.AsyncClient) -> None:
    # deeper than one batch level of the breadth-first walk, and with a cycle
    # through versions (a@2 -> b@1, b@2 -> a@1)
    names = [f"chain-p{i}" for i in range(30)]
    await publish(api, names[0], {"f": b"0"})
    for prev, name in zip(names, names[1:]):
        await publish(api, name, {"f": name.encode()}, dependencies=[f"{prev}@1"])
    await publish(api, names[0], {"f": b"again"}, dependencies=[f"{names[-1]}@1"])
    graph = (await api.post("/closure", json={"roots": [f"{names[5]}@1"]})).json()
    assert set(graph["products"]) == set(names)


async def test_index_and_closure_do_not_query_per_product(app: FastAPI, api: httpx.AsyncClient) -> None:
    async def grow(width: int) -> None:
        # one hub depending on `width` leaves, each with a version and a label
        deps = []
        for i in range(width):
            leaf = f"wide-leaf{i}"
            if (await api.get(f"/products/{leaf}")).status_code == 404:
                await publish(api, leaf, {"f": leaf.encode()}, labels=["published"])
            deps.append(f"{leaf}@1")
        await publish(api, "wide-hub", {"h": str(width).encode()}, dependencies=deps)

    async with StatementCount(app, api) as queries:
        await grow(3)
        small = (await queries("GET", "/index"), await queries("POST", "/closure", json={"roots": ["wide-hub"]}))
        await grow(15)
        large = (await queries("GET", "/index"), await queries("POST", "/closure", json={"roots": ["wide-hub"]}))
    assert len((await api.get("/index")).json()["products"]) == 16
    assert small[0] >= 5 and small[1] >= 5  # the statements are really counted
    assert large == small
