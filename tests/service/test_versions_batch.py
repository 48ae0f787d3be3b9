"""``POST /versions/batch``: many Versions in one request, each as the single GET answers it."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from pvc_client import VERSIONS_BATCH_LIMIT
from pvc_service._auth import tokens_from_mapping

from .conftest import AppFactory, client
from .helpers import StatementCount, error_code, publish

pytestmark = pytest.mark.anyio

TEX = "spies:asset-tex:walter"
MODEL = "spies:asset-model:walter"
LGT = "spies:100:10-lgt:walter"


async def _store(api: httpx.AsyncClient) -> list[str]:
    """A few products with labels, dependencies, a workspace origin and a rename; the refs to ask."""
    await publish(api, TEX, {"t.tx": b"tex 1"}, labels=["published"])
    await publish(api, TEX, {"t.tx": b"tex 2"})
    await publish(api, MODEL, {"m.usd": b"model"}, dependencies=[f"{TEX}@2"], labels=["published", "approved"])
    r = await api.put("/workspaces/lgt", json={"roots": [MODEL], "outputs": [LGT]})
    assert r.status_code == 200, r.text
    await publish(api, LGT, {"l.usd": b"light"}, dependencies=[f"{MODEL}@1", f"{TEX}@1"],
                  workspace={"name": "lgt", "revision": 1}, message="first light")
    r = await api.post(f"/products/{TEX}/rename", json={"new_pri": "spies:asset-tex:walter_v2"})
    assert r.status_code == 200, r.text
    # an alias, the new name, a repeat, and an order unlike the store's
    return [f"{LGT}@1", f"{TEX}@1", "spies:asset-tex:walter_v2@2", f"{MODEL}@1", f"{LGT}@1"]


async def test_answers_each_as_the_single_get_in_the_order_asked(api: httpx.AsyncClient) -> None:
    refs = await _store(api)
    r = await api.post("/versions/batch", json={"versions": refs})
    assert r.status_code == 200, r.text
    answered = r.json()["versions"]
    assert len(answered) == len(refs)
    for ref, version in zip(refs, answered):
        pri, number = ref.rsplit("@", 1)
        single = await api.get(f"/products/{pri}/versions/{number}")
        assert version == single.json(), ref
    assert answered[0]["workspace"] == {"name": "lgt", "revision": 1}
    assert answered[0]["dependencies"] == ["spies:asset-model:walter@1", "spies:asset-tex:walter_v2@1"]
    assert answered[1]["pri"] == "spies:asset-tex:walter_v2" and answered[1]["labels"] == ["published"]
    assert answered[3]["labels"] == ["approved", "published"] and answered[3]["manifest"][0]["path"] == "m.usd"

    # as of a time, as the GET takes it: in the body (or the query)
    first = answered[1]["created_at"]
    r = await api.post("/versions/batch", json={"versions": [f"{TEX}@1"], "as_of": first})
    assert r.json()["versions"] == [(await api.get(f"/products/{TEX}/versions/1", params={"as_of": first})).json()]
    r = await api.post("/versions/batch", params={"as_of": first}, json={"versions": [f"{TEX}@2"]})
    assert r.status_code == 404 and error_code(r) == "not_found"


async def test_unknown_and_malformed_refs(api: httpx.AsyncClient) -> None:
    await publish(api, TEX)
    r = await api.post("/versions/batch", json={"versions": [f"{TEX}@1", f"{TEX}@7", "spies:nobody-here:x@1"]})
    assert r.status_code == 404 and error_code(r) == "not_found"
    message = r.json()["error"]["message"]
    assert "2 of 3" in message and f"{TEX}@7" in message and "'spies:nobody-here:x'" in message and f"{TEX}@1" not in message
    r = await api.post("/versions/batch", json={"versions": [f"{TEX}@{n}" for n in range(2, 40)]})
    assert "38 of 38" in r.json()["error"]["message"] and "and 28 more" in r.json()["error"]["message"]

    r = await api.post("/versions/batch", json={"versions": ["spies:nobody-here:x@1", f"{TEX}@1", f"{TEX}@3"],
                                                "missing": "omit"})
    assert r.status_code == 200
    answered = r.json()["versions"]
    assert answered[0] is None and answered[2] is None and answered[1]["ref"] == f"{TEX}@1"

    for bad in (TEX, f"{TEX}@published", f"{TEX}@latest", f"{TEX}@0", "Not A PRI@1", f"{TEX}@01"):
        r = await api.post("/versions/batch", json={"versions": [f"{TEX}@1", bad]})
        assert r.status_code == 400 and error_code(r) == "invalid_pri", bad
        assert r.json()["error"]["message"].startswith("versions[1]: "), r.text
    for body in ({"versions": []}, {"versions": [f"{TEX}@1"] * (VERSIONS_BATCH_LIMIT + 1)},
                 {"versions": [f"{TEX}@1"], "missing": "skip"}, {"versions": [f"{TEX}@1"], "depth": 1}, {}):
        r = await api.post("/versions/batch", json=body)
        assert r.status_code == 422 and error_code(r) == "invalid", body
    r = await api.post("/versions/batch", json={"versions": [f"{TEX}@1"] * VERSIONS_BATCH_LIMIT})
    assert r.status_code == 200 and len(r.json()["versions"]) == VERSIONS_BATCH_LIMIT


async def test_statements_do_not_grow_with_the_refs(app: FastAPI, api: httpx.AsyncClient) -> None:
    async def grow(width: int) -> list[str]:
        refs = []
        for i in range(width):
            leaf = f"wide-leaf{i}"
            if (await api.get(f"/products/{leaf}")).status_code == 404:
                await publish(api, leaf, {"f": leaf.encode()}, labels=["published"])
                await publish(api, leaf, {"f": b"2" + leaf.encode()}, dependencies=[f"wide-leaf0@1"])
            refs += [f"{leaf}@1", f"{leaf}@2"]
        return refs

    async with StatementCount(app, api) as queries:
        small = await queries("POST", "/versions/batch", json={"versions": await grow(2)})
        large = await queries("POST", "/versions/batch", json={"versions": await grow(20)})
        single = await queries("GET", "/products/wide-leaf3/versions/2")
    assert small >= 5  # the statements are really counted
    assert large == small
    assert single <= small + 1  # the one GET is no dearer for sharing the batch's builder


async def test_needs_the_read_role(make_app: AppFactory) -> None:
    secured = make_app(tokens=tokens_from_mapping({"reader-token": ("read", "viewer"),
                                                   "publisher-token": ("publish", "lighter")}))
    async with client(secured, "publisher-token") as pub, client(secured, "reader-token") as reader, \
            client(secured) as anonymous:
        await publish(pub, TEX)
        r = await anonymous.post("/versions/batch", json={"versions": [f"{TEX}@1"]})
        assert r.status_code == 401 and error_code(r) == "unauthorized"
        r = await reader.post("/versions/batch", json={"versions": [f"{TEX}@1"]})
        assert r.status_code == 200 and r.json()["versions"][0]["author"] == "lighter"
