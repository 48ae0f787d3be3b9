"""Keyset pages of ``/index``, ``/closure`` and ``GET /products``: pages merge into the unpaged answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import inspect, text

from .conftest import AppFactory, client
from .helpers import StatementCount, error_code, publish

pytestmark = pytest.mark.anyio

SHOW = "paged"


async def _store(api: httpx.AsyncClient) -> list[str]:
    """Twelve assets, a shot per pair of them, renames, labels, and a late version."""
    assets = [f"{SHOW}:asset-a{i:02d}:model" for i in range(12)]
    for i, pri in enumerate(assets):
        await publish(api, pri, {"m": pri.encode()}, at=f"2020-01-01T00:00:{i:02d}Z",
                      labels=["published"] if i % 3 == 0 else [])
    shots = []
    for i in range(0, 12, 2):
        shot = f"{SHOW}:100:{i:03d}-lgt:main"
        await publish(api, shot, {"l": shot.encode()}, dependencies=[f"{assets[i]}@1", f"{assets[i + 1]}@1"],
                      at=f"2020-01-02T00:00:{i:02d}Z")
        shots.append(shot)
    # a comp on two shots, published later: absent as of 2020-01-05
    await publish(api, f"{SHOW}:100-comp:main", {"c": b"c"}, dependencies=[f"{shots[0]}@1", f"{shots[1]}@1"],
                  at="2020-01-10T00:00:00Z")
    # renames: an alias sorts in another place than its canonical name
    r = await api.post(f"/products/{assets[5]}/rename", json={"new_pri": f"{SHOW}:asset-zz:model"})
    assert r.status_code == 200, r.text
    r = await api.post(f"/products/{shots[2]}/rename", json={"new_pri": f"{SHOW}:000-lgt:first"})
    assert r.status_code == 200, r.text
    await publish(api, "other:asset-x:model", {"x": b"x"})
    return shots


async def _pages(api: httpx.AsyncClient, method: str, path: str, limit: int, **request: Any) -> list[dict[str, Any]]:
    """Every page, the next ones asked with the first one's ``as_of`` and its ``next``."""
    pages: list[dict[str, Any]] = []
    after: Any = None
    while True:
        if method == "GET":
            params = {**request.get("params", {}), "limit": limit}
            if after is not None:
                params.update(after=after, as_of=pages[0]["as_of"])
            r = await api.get(path, params=params)
        else:
            body = {**request["json"], "limit": limit}
            if after is not None:
                body.update(after=after, as_of=pages[0]["as_of"])
            r = await api.post(path, json=body)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        after = pages[-1]["next"]
        if after is None:
            return pages
        assert len(pages) < 100, "the pages do not end"


def _merged(pages: list[dict[str, Any]]) -> dict[str, Any]:
    products: dict[str, Any] = {}
    for page in pages:
        assert set(page["products"]).isdisjoint(products)
        products.update(page["products"])
    return {**pages[0], "products": dict(sorted(products.items())), "next": None}


async def test_index_pages_merge_into_the_whole(api: httpx.AsyncClient) -> None:
    await _store(api)
    for params in ({}, {"prefix": f"{SHOW}:asset-"}, {"as_of": "2020-01-05"},
                   {"prefix": f"{SHOW}:1", "as_of": "2020-01-05"}, {"prefix": "nothing-"}):
        whole = (await api.get("/index", params=params)).json()
        assert whole["next"] is None
        assert list(whole["products"]) == sorted(whole["products"])
        for limit in (1, 4, 7, 100):
            pages = await _pages(api, "GET", "/index", limit, params=params)
            assert all(len(p["products"]) <= limit for p in pages)
            assert all(p["cursor"] == whole["cursor"] for p in pages)
            # each page in name order, and the pages one after the other
            names = [name for p in pages for name in p["products"]]
            assert names == sorted(names)
            merged = _merged(pages)
            if "as_of" in params:
                assert merged == whole, (params, limit)
            else:  # "now" moves on between requests; nothing else does
                assert {**merged, "as_of": None} == {**whole, "as_of": None}, (params, limit)
            # a full last page is known to be the last: no empty page after it
            assert pages[-1]["products"] or len(pages) == 1
    assert len((await api.get("/index")).json()["products"]) == 20
    # the prefix is a prefix of canonical names, and an alias does not page like one
    renamed = (await api.get("/index", params={"prefix": f"{SHOW}:asset-zz"})).json()
    assert list(renamed["products"]) == [f"{SHOW}:asset-zz:model"]
    assert (await api.get("/index", params={"prefix": f"{SHOW}:asset-a05"})).json()["products"] == {}


async def test_index_page_after_any_pri(api: httpx.AsyncClient) -> None:
    await _store(api)
    names = list((await api.get("/index")).json()["products"])
    # `after` need not name a product: pages start after where it would sort
    page = (await api.get("/index", params={"after": f"{SHOW}:asset-a03:mod", "limit": 2})).json()
    assert list(page["products"]) == [f"{SHOW}:asset-a03:model", f"{SHOW}:asset-a04:model"]
    assert page["next"] == f"{SHOW}:asset-a04:model"
    last = (await api.get("/index", params={"after": names[-2], "limit": 5})).json()
    assert list(last["products"]) == names[-1:] and last["next"] is None
    beyond = (await api.get("/index", params={"after": names[-1]})).json()
    assert beyond["products"] == {} and beyond["next"] is None
    exact = (await api.get("/index", params={"after": names[-3], "limit": 2})).json()
    assert list(exact["products"]) == names[-2:] and exact["next"] is None


async def test_pages_are_in_byte_order_on_every_database(api: httpx.AsyncClient) -> None:
    # upper case before lower, '-' before digits before ':' before letters before '_':
    # what Python's sort and both databases' pages (PostgreSQL through "C") agree on
    names = ["ab-x", "Ab-x", "ab_c-x", "ab:c-x", "ab1-x", "aB-x", "AB-x", "a-x"]
    for name in names:
        await publish(api, name, {"f": name.encode()})
    pages = await _pages(api, "GET", "/index", 3)
    assert [n for p in pages for n in p["products"]] == sorted(names)
    listed = (await api.get("/products", params={"limit": 100})).json()["products"]
    assert [p["pri"] for p in listed] == sorted(names)
    # a prefix is case-sensitive
    assert list((await api.get("/index", params={"prefix": "ab"})).json()["products"]) == sorted(
        n for n in names if n.startswith("ab"))


async def test_closure_pages_merge_into_the_whole(api: httpx.AsyncClient) -> None:
    shots = await _store(api)
    comp = f"{SHOW}:100-comp:main"
    for body in ({"roots": [comp]}, {"roots": [comp], "depth": 1}, {"roots": [comp, *shots[3:]], "depth": 0},
                 {"roots": shots + ["nobody-x"], "missing": "omit"}, {"roots": [comp], "as_of": "2020-01-05",
                                                                       "missing": "omit"}):
        whole = (await api.post("/closure", json=body)).json()
        assert whole["next"] is None
        for limit in (1, 2, 5, 1000):
            pages = await _pages(api, "POST", "/closure", limit, json=body)
            assert all(len(p["products"]) <= limit for p in pages)
            assert all(p["roots"] == whole["roots"] for p in pages)
            # pages are ranges of product ids
            ids = [v["product_id"] for p in pages for v in p["products"].values()]
            assert all(max(v["product_id"] for v in p["products"].values()) == p["next"]
                       for p in pages if p["next"] is not None)
            assert sorted(ids) == sorted(set(ids))
            merged = _merged(pages)
            if "as_of" in body:
                assert merged == whole, (body, limit)
            else:
                assert {**merged, "as_of": None} == {**whole, "as_of": None}, (body, limit)
    assert len((await api.post("/closure", json={"roots": [comp]})).json()["products"]) == 7
    empty = (await api.post("/closure", json={"roots": [comp], "after": 10**12})).json()
    assert empty["products"] == {} and empty["next"] is None and len(empty["roots"]) == 1


async def test_products_pages_say_where_the_next_starts(api: httpx.AsyncClient) -> None:
    await _store(api)
    whole = (await api.get("/products", params={"limit": 1000})).json()
    assert whole["next"] is None
    names, after = [], None
    while True:
        page = (await api.get("/products", params={"limit": 3, **({"after": after} if after else {})})).json()
        names += [p["pri"] for p in page["products"]]
        after = page["next"]
        if after is None:
            break
        assert after == page["products"][-1]["pri"] and len(page["products"]) == 3
    assert names == [p["pri"] for p in whole["products"]]
    assert len(names) == 20


@pytest.mark.parametrize(("method", "path", "request_args", "status", "code"), [
    ("GET", "/index", {"params": {"limit": 0}}, 422, "invalid"),
    ("GET", "/index", {"params": {"limit": 100_001}}, 422, "invalid"),
    ("GET", "/index", {"params": {"limit": "ten"}}, 422, "invalid"),
    ("GET", "/index", {"params": {"after": "not a pri"}}, 400, "invalid_pri"),
    ("GET", "/index", {"params": {"after": "x" * 256}}, 422, "invalid"),
    ("POST", "/closure", {"json": {"roots": [], "limit": 0}}, 422, "invalid"),
    ("POST", "/closure", {"json": {"roots": [], "limit": 100_001}}, 422, "invalid"),
    ("POST", "/closure", {"json": {"roots": [], "after": -1}}, 422, "invalid"),
    ("POST", "/closure", {"json": {"roots": [], "after": "paged-x"}}, 422, "invalid"),
    ("GET", "/products", {"params": {"limit": 0}}, 422, "invalid"),
])
async def test_bad_pages_are_refused_with_a_reason(api: httpx.AsyncClient, method: str, path: str,
                                                   request_args: dict[str, Any], status: int, code: str) -> None:
    r = await api.request(method, path, **request_args)
    assert r.status_code == status, r.text
    assert error_code(r) == code
    field = "after" if "after" in str(request_args) else "limit"
    assert field in r.json()["error"]["message"]


async def test_pages_do_not_query_per_product(app: FastAPI, api: httpx.AsyncClient) -> None:
    """A page costs the same statements whatever the size of the store around it."""
    async def grow(to: int) -> None:
        for i in range(to):
            name = f"grow-p{i:03d}:model"
            if (await api.get(f"/products/{name}")).status_code == 404:
                deps = [f"grow-p{i - 1:03d}:model@1"] if i else []
                await publish(api, name, {"f": name.encode()}, labels=["published"], dependencies=deps)

    async def figures(queries: Any) -> tuple[int, ...]:
        return (await queries("GET", "/index", params={"after": "grow-p002:model", "limit": 5}),
                await queries("GET", "/products", params={"after": "grow-p002:model", "limit": 5}),
                await queries("POST", "/closure", json={"roots": ["grow-p009:model"], "limit": 5}),
                await queries("POST", "/closure", json={"roots": ["grow-p009:model"], "depth": 0}))

    async with StatementCount(app, api) as queries:
        await grow(10)
        small = await figures(queries)
        await grow(40)
        large = await figures(queries)
    assert min(small) >= 3  # the statements are really counted
    assert large == small


async def test_an_index_added_later_is_created_in_an_existing_database(make_app: AppFactory) -> None:
    first = make_app()
    engine = first.state.pvc.db.engine
    dialect = engine.dialect.name
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_product_names_product"))
        if dialect == "postgresql":
            conn.execute(text("DROP INDEX ix_product_names_name_c"))
    first.state.pvc.db.dispose()
    again = make_app()  # a store that predates the indexes: the start creates them
    found = {i["name"] for i in inspect(again.state.pvc.db.engine).get_indexes("product_names")}
    assert "ix_product_names_product" in found
    # the byte-order index is PostgreSQL's alone: SQLite's unique index on names serves
    assert ("ix_product_names_name_c" in found) == (dialect == "postgresql")
    async with client(again) as api:
        await publish(api, "later-x", {"f": b"x"})
        assert list((await api.get("/index", params={"limit": 1})).json()["products"]) == ["later-x"]
