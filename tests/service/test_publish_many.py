"""``POST /versions/publish``: many versions in one transaction, all of them or none."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pvc_client import PUBLISH_BATCH_LIMIT
from pvc_service._auth import tokens_from_mapping

from .conftest import AppFactory, client
from .helpers import error_code, file_entry, publish, upload

pytestmark = pytest.mark.anyio

TEX = "spies:asset-tex:walter"
MODEL = "spies:asset-model:walter"
LGT = "spies:100:10-lgt:walter"


async def _item(api: httpx.AsyncClient, pri: str, data: bytes, **body: Any) -> dict[str, Any]:
    await upload(api, data)
    return {"pri": pri, "manifest": [file_entry("f.usd", data)], **body}


async def _numbers(api: httpx.AsyncClient, pri: str) -> list[int]:
    r = await api.get(f"/products/{pri}/versions")
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    return [v["number"] for v in r.json()["versions"]]


async def test_many_versions_in_one_request_as_each_publish_answers(api: httpx.AsyncClient) -> None:
    await publish(api, TEX, {"t.tx": b"tex 1"})
    items = [await _item(api, TEX, b"tex 2", labels=["published"], message="second"),
             await _item(api, MODEL, b"model", dependencies=[f"{TEX}@1"], author="modeller"),
             await _item(api, TEX, b"tex 3")]  # one product twice: numbered in the order given
    r = await api.post("/versions/publish", json={"publications": items})
    assert r.status_code == 201, r.text
    versions = r.json()["versions"]
    assert [v["ref"] for v in versions] == [f"{TEX}@2", f"{MODEL}@1", f"{TEX}@3"]
    for v in versions:  # each as the single GET answers it
        single = await api.get(f"/products/{v['pri']}/versions/{v['number']}")
        assert single.json() == v
    assert versions[0]["labels"] == ["published"] and versions[0]["message"] == "second"
    assert versions[1]["dependencies"] == [f"{TEX}@1"] and versions[1]["author"] == "modeller"
    r = await api.get("/events", params={"after": 0})
    assert [e["pri"] for e in r.json()["events"] if e["kind"] == "publish"][-3:] == [TEX, MODEL, TEX]


async def test_one_refused_publishes_none(api: httpx.AsyncClient) -> None:
    await publish(api, TEX, {"t.tx": b"tex 1"})
    good = await _item(api, LGT, b"light")
    unknown_dep = await _item(api, MODEL, b"model", dependencies=[f"{TEX}@9"])
    r = await api.post("/versions/publish", json={"publications": [good, unknown_dep]})
    assert r.status_code in (400, 404, 409) and "publications[1]" in r.json()["error"]["message"], r.text
    missing_blob = {"pri": MODEL, "manifest": [file_entry("m.usd", b"never uploaded")]}
    r = await api.post("/versions/publish", json={"publications": [good, missing_blob]})
    assert r.status_code == 400 and "publications[1]" in r.json()["error"]["message"], r.text
    r = await api.post("/versions/publish", json={"publications": [good, {**good, "pri": "no-dash/here"}]})
    assert r.status_code == 400 and error_code(r) == "invalid_pri"
    assert r.json()["error"]["message"].startswith("publications[1]: "), r.text
    r = await api.post("/versions/publish", json={"publications": [{**good, "labels": ["latest"]}]})
    assert r.status_code == 400 and "publications[0]" in r.json()["error"]["message"], r.text
    for body in ({"publications": []}, {"publications": [good] * (PUBLISH_BATCH_LIMIT + 1)}, {}):
        r = await api.post("/versions/publish", json=body)
        assert 400 <= r.status_code < 500, r.text
    assert await _numbers(api, LGT) == [] and await _numbers(api, MODEL) == []
    assert await _numbers(api, TEX) == [1]


async def test_needs_the_publish_role(make_app: AppFactory) -> None:
    secured = make_app(tokens=tokens_from_mapping({"reader-token": ("read", "viewer"),
                                                   "publisher-token": ("publish", "lighter")}))
    async with client(secured, "publisher-token") as pub, client(secured, "reader-token") as reader:
        item = await _item(pub, TEX, b"tex")
        r = await reader.post("/versions/publish", json={"publications": [item]})
        assert r.status_code == 403 and error_code(r) == "forbidden"
        r = await pub.post("/versions/publish", json={"publications": [item]})
        assert r.status_code == 201 and r.json()["versions"][0]["author"] == "lighter"
