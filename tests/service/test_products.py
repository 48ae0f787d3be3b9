"""Products, versions, labels and renames, as of now and as of the past (SQLite and PostgreSQL)."""

from __future__ import annotations

import httpx
import pytest

from .helpers import error_code, publish

pytestmark = pytest.mark.anyio

WALTER = "spies:100:10-lgt:walter"
MODEL = "spies:asset-model:walter"


async def test_publish_then_get_list(api: httpx.AsyncClient) -> None:
    v1 = await publish(api, WALTER, {"a.usd": b"one"}, message="first", author="kim", labels=["published"])
    assert v1["number"] == 1 and v1["ref"] == f"{WALTER}@1" and v1["pri"] == WALTER
    assert v1["author"] == "kim" and v1["message"] == "first" and v1["labels"] == ["published"]
    assert [e["path"] for e in v1["manifest"]] == ["a.usd"]
    v2 = await publish(api, WALTER, {"a.usd": b"two", "b.usd": b"bee"})
    assert v2["number"] == 2 and v2["product_id"] == v1["product_id"] and v2["labels"] == []

    assert (await api.get(f"/products/{WALTER}/versions/1")).json() == v1 | {"labels": ["published"]}
    assert (await api.get(f"/products/{WALTER}/versions/latest")).json()["number"] == 2
    assert (await api.get(f"/products/{WALTER}/versions/published")).json()["number"] == 1

    listed = (await api.get(f"/products/{WALTER}/versions")).json()["versions"]
    assert [v["number"] for v in listed] == [1, 2]
    assert "manifest" not in listed[0] and listed[0]["message"] == "first"

    product = (await api.get(f"/products/{WALTER}")).json()
    assert product == {"pri": WALTER, "product_id": v1["product_id"], "aliases": [],
                       "created_at": v1["created_at"], "latest": 2}


async def test_head_answers_like_get_without_a_body(api: httpx.AsyncClient) -> None:
    await publish(api, WALTER)
    get = await api.get(f"/products/{WALTER}")
    head = await api.head(f"/products/{WALTER}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert (await api.head("/products/spies-unknown")).status_code == 404


async def test_unknown_things_are_404(api: httpx.AsyncClient) -> None:
    assert error_code(await api.get(f"/products/{WALTER}")) == "not_found"
    await publish(api, WALTER)
    for path in (f"/products/{WALTER}/versions/2", f"/products/{WALTER}/versions/approved",
                 f"/products/{WALTER}/labels/approved/history", "/products/spies-nothing/versions"):
        r = await api.get(path)
        assert r.status_code == 404 and error_code(r) == "not_found", path


async def test_bad_selectors_are_400(api: httpx.AsyncClient) -> None:
    await publish(api, WALTER)
    for sel in ("01", "0", "1.2.3", "Published", "-1"):
        r = await api.get(f"/products/{WALTER}/versions/{sel}")
        assert r.status_code == 400 and error_code(r) == "invalid_pri", sel


async def test_list_products_prefix_and_paging(api: httpx.AsyncClient) -> None:
    names = ["spies:100:10-lgt:walter", "spies:100:20-lgt:lance", "spies:asset-model:walter",
             "heist:1-anim:main", "spies:100_x-comp:a"]
    for name in names:
        await publish(api, name)
    everything = (await api.get("/products")).json()["products"]
    assert [p["pri"] for p in everything] == sorted(names)
    assert all(p["latest"] == 1 for p in everything)
    spies100 = (await api.get("/products", params={"prefix": "spies:100:"})).json()["products"]
    assert [p["pri"] for p in spies100] == ["spies:100:10-lgt:walter", "spies:100:20-lgt:lance"]
    # '_' is a literal in a prefix, not a wildcard
    literal = (await api.get("/products", params={"prefix": "spies:100_"})).json()["products"]
    assert [p["pri"] for p in literal] == ["spies:100_x-comp:a"]
    page1 = (await api.get("/products", params={"limit": 2})).json()["products"]
    page2 = (await api.get("/products", params={"limit": 2, "after": page1[-1]["pri"]})).json()["products"]
    assert [p["pri"] for p in page1 + page2] == sorted(names)[:4]


async def test_time_travel_with_at_and_as_of(api: httpx.AsyncClient) -> None:
    v1 = await publish(api, WALTER, {"a": b"1"}, at="2020-01-01T00:00:00Z", labels=["published"])
    assert v1["created_at"] == "2020-01-01T00:00:00.000000Z"
    await publish(api, WALTER, {"a": b"2"}, at="2021-06-01T12:00:00+02:00", labels=["published"])
    await publish(api, WALTER, {"a": b"3"})

    async def latest(as_of: str) -> int:
        return (await api.get(f"/products/{WALTER}", params={"as_of": as_of})).json()["latest"]

    assert await latest("2020-06-01") == 1  # a bare date is the end of that day
    assert await latest("2021-06-01T10:00:00Z") == 2
    assert await latest("2021-06-01T09:59:59.999999Z") == 1
    assert await latest("now") == 3
    r = await api.get(f"/products/{WALTER}", params={"as_of": "2019-12-31"})
    assert r.status_code == 404
    r = await api.get(f"/products/{WALTER}/versions/2", params={"as_of": "2020-12-31"})
    assert r.status_code == 404
    old = (await api.get(f"/products/{WALTER}/versions/published", params={"as_of": "2020-12-31"})).json()
    assert old["number"] == 1 and old["labels"] == ["published"]
    versions = (await api.get(f"/products/{WALTER}/versions", params={"as_of": "2021-12-31"})).json()
    assert [v["number"] for v in versions["versions"]] == [1, 2]
    assert (await api.get("/products", params={"as_of": "2019-01-01"})).json() == {"products": [], "next": None}
    r = await api.get(f"/products/{WALTER}", params={"as_of": "yesterday"})
    assert r.status_code == 400 and error_code(r) == "invalid_time"


async def test_labels_move_delete_history(api: httpx.AsyncClient) -> None:
    await publish(api, WALTER, {"a": b"1"}, labels=["published"])
    await publish(api, WALTER, {"a": b"2"})
    r = await api.put(f"/products/{WALTER}/labels/approved", json={"version": 2, "author": "sup"})
    assert r.status_code == 200 and r.json()["label"] == "approved" and r.json()["version"] == 2
    moved_at = r.json()["moved_at"]
    assert (await api.get(f"/products/{WALTER}/labels")).json() == {"labels": {"approved": 2, "published": 1}}
    await api.put(f"/products/{WALTER}/labels/approved", json={"version": 1})
    assert (await api.get(f"/products/{WALTER}/versions/approved")).json()["number"] == 1
    # as of the first move it still pointed at 2
    r = await api.get(f"/products/{WALTER}/labels", params={"as_of": moved_at})
    assert r.json()["labels"]["approved"] == 2

    assert (await api.delete(f"/products/{WALTER}/labels/approved")).status_code == 204
    assert "approved" not in (await api.get(f"/products/{WALTER}/labels")).json()["labels"]
    assert (await api.get(f"/products/{WALTER}/versions/approved")).status_code == 404
    assert (await api.delete(f"/products/{WALTER}/labels/approved")).status_code == 404
    history = (await api.get(f"/products/{WALTER}/labels/approved/history")).json()["history"]
    assert [h["version"] for h in history] == [2, 1, None]
    assert history[0]["author"] == "sup"
    r = await api.get(f"/products/{WALTER}/labels/approved/history", params={"as_of": moved_at})
    assert [h["version"] for h in r.json()["history"]] == [2]


async def test_label_rules(api: httpx.AsyncClient) -> None:
    await publish(api, WALTER)
    r = await api.put(f"/products/{WALTER}/labels/latest", json={"version": 1})
    assert r.status_code == 400 and error_code(r) == "invalid"
    r = await api.put(f"/products/{WALTER}/labels/Bad-Label", json={"version": 1})
    assert r.status_code == 400 and error_code(r) == "invalid_pri"
    r = await api.put(f"/products/{WALTER}/labels/approved", json={"version": 7})
    assert r.status_code == 404
    r = await api.put(f"/products/{WALTER}/labels/approved", json={"version": 2**40})
    assert r.status_code == 422 and error_code(r) == "invalid"
    r = await api.put(f"/products/{WALTER}/labels/approved", json={"version": "one"})
    assert r.status_code == 422 and error_code(r) == "invalid"
    r = await publish(api, WALTER, labels=["latest"], expect=400)
    assert (await api.get(f"/products/{WALTER}")).json()["latest"] == 1


async def test_rename_keeps_old_name_and_history(api: httpx.AsyncClient) -> None:
    v1 = await publish(api, MODEL)
    user = await publish(api, WALTER, dependencies=[f"{MODEL}@1"])
    assert user["dependencies"] == [f"{MODEL}@1"]
    before = user["created_at"]

    r = await api.post(f"/products/{MODEL}/rename", json={"new_pri": "spies:asset:walter-model"})
    assert r.status_code == 200, r.text
    assert r.json()["pri"] == "spies:asset:walter-model" and r.json()["aliases"] == [MODEL]
    assert r.json()["product_id"] == v1["product_id"]

    # the old name keeps resolving, answered with the canonical name
    assert (await api.get(f"/products/{MODEL}")).json()["pri"] == "spies:asset:walter-model"
    assert (await api.get(f"/products/{MODEL}/versions/1")).json()["ref"] == "spies:asset:walter-model@1"
    # dependencies are spelled with the name as of the request
    now_deps = (await api.get(f"/products/{WALTER}/versions/1")).json()["dependencies"]
    assert now_deps == ["spies:asset:walter-model@1"]
    then = (await api.get(f"/products/{WALTER}/versions/1", params={"as_of": before})).json()
    assert then["dependencies"] == [f"{MODEL}@1"]
    # before the rename, the new name did not exist and the old one was canonical
    assert (await api.get("/products/spies:asset:walter-model", params={"as_of": before})).status_code == 404
    old = (await api.get(f"/products/{MODEL}", params={"as_of": before})).json()
    assert old["pri"] == MODEL and old["aliases"] == []
    listed = (await api.get("/products", params={"as_of": before})).json()["products"]
    assert sorted(p["pri"] for p in listed) == sorted([MODEL, WALTER])

    # publishing to the old name adds to the same product
    v2 = await publish(api, MODEL)
    assert v2["pri"] == "spies:asset:walter-model" and v2["number"] == 2


async def test_rename_conflicts(api: httpx.AsyncClient) -> None:
    await publish(api, MODEL)
    await publish(api, WALTER)
    r = await api.post(f"/products/{MODEL}/rename", json={"new_pri": WALTER})
    assert r.status_code == 409 and error_code(r) == "conflict"
    await api.post(f"/products/{MODEL}/rename", json={"new_pri": "spies:asset-m2"})
    r = await api.post("/products/spies:asset-m2/rename", json={"new_pri": MODEL})
    assert r.status_code == 409  # an alias is a name too
    r = await api.post("/products/spies:asset-m2/rename", json={"new_pri": "no dash"})
    assert r.status_code == 400 and error_code(r) == "invalid_pri"
    r = await api.post("/products/spies:asset-nothing/rename", json={"new_pri": "spies:asset-x"})
    assert r.status_code == 404
