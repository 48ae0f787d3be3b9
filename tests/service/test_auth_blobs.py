"""Roles (401 vs 403, authorship) and the blob store (upload, ranges, caching headers, limits)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from pvc_service._auth import tokens_from_mapping
from pvc_service._blobs import BlobStore

from .conftest import AppFactory, client
from .helpers import error_code, file_entry, publish, sha, upload

pytestmark = pytest.mark.anyio

PRI = "spies:100:10-lgt:walter"
TOKENS = {"reader-token": ("read", "viewer"), "publisher-token": ("publish", "lighter"),
          "admin-token": ("admin", "wrangler")}


@pytest.fixture
async def secured(make_app: AppFactory) -> AsyncIterator[FastAPI]:
    yield make_app(tokens=tokens_from_mapping(TOKENS))


async def test_roles(secured: FastAPI) -> None:
    async with client(secured, "publisher-token") as pub, client(secured, "reader-token") as reader, \
            client(secured, "admin-token") as admin, client(secured) as anonymous, \
            client(secured, "wrong-token") as stranger:
        v1 = await publish(pub, PRI, author="someone else")
        assert v1["author"] == "lighter"  # the token's name wins

        # reading needs a known token: 401 without one, whatever the endpoint
        for who in (anonymous, stranger):
            for path in (f"/products/{PRI}", "/index", "/events", f"/blobs/{'0' * 64}", "/workspaces"):
                r = await who.get(path)
                assert r.status_code == 401 and error_code(r) == "unauthorized", path
                assert r.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.get("/health")).status_code == 200
        assert (await reader.get(f"/products/{PRI}/versions/1")).status_code == 200

        # a read token can change nothing: 403
        writes = [
            ("put", f"/blobs/{sha(b'x')}", {"content": b"x"}),
            ("post", "/blobs/missing", {"json": {"sha256": []}}),
            ("post", f"/products/{PRI}/versions", {"json": {"manifest": []}}),
            ("put", f"/products/{PRI}/labels/approved", {"json": {"version": 1}}),
            ("delete", f"/products/{PRI}/labels/approved", {}),
            ("post", f"/products/{PRI}/rename", {"json": {"new_pri": "spies-renamed"}}),
            ("put", "/workspaces/w", {"json": {"roots": []}}),
            ("delete", "/workspaces/w", {}),
            ("post", "/snapshots", {"json": {"record": {}}}),
        ]
        for method, path, kwargs in writes:
            r = await reader.request(method.upper(), path, **kwargs)
            assert r.status_code == 403 and error_code(r) == "forbidden", path
            r = await anonymous.request(method.upper(), path, **kwargs)
            assert r.status_code == 401, path

        # publish may label and write workspaces, but not rename
        r = await pub.put(f"/products/{PRI}/labels/approved", json={"version": 1})
        assert r.status_code == 200
        history = (await reader.get(f"/products/{PRI}/labels/approved/history")).json()["history"]
        assert history[0]["author"] == "lighter"
        assert (await pub.put("/workspaces/w", json={"roots": []})).json()["author"] == "lighter"
        r = await pub.post(f"/products/{PRI}/rename", json={"new_pri": "spies-renamed"})
        assert r.status_code == 403
        r = await admin.post(f"/products/{PRI}/rename", json={"new_pri": "spies-renamed"})
        assert r.status_code == 200
        assert (await reader.get(f"/products/{PRI}")).json()["pri"] == "spies-renamed"


async def test_open_service_records_the_requested_author(api: httpx.AsyncClient) -> None:
    assert (await publish(api, PRI, author="kim"))["author"] == "kim"
    assert (await publish(api, PRI, {"b": b"b"}))["author"] == "anonymous"


async def test_upload_is_idempotent_and_reported(api: httpx.AsyncClient) -> None:
    data = b"\x00binary\xff" * 1000
    name = sha(data)
    assert (await api.post("/blobs/missing", json={"sha256": [name, name]})).json() == {"missing": [name]}
    r = await api.put(f"/blobs/{name}", content=data)
    assert r.status_code == 201 and r.json() == {"sha256": name, "size": len(data)}
    r = await api.put(f"/blobs/{name}", content=data)
    assert r.status_code == 200
    other = sha(b"other")
    assert (await api.post("/blobs/missing", json={"sha256": [other, name]})).json() == {"missing": [other]}


async def test_streamed_upload(api: httpx.AsyncClient) -> None:
    parts = [bytes([i]) * 300_000 for i in range(8)]  # several flushes to the temp file

    async def body() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    whole = b"".join(parts)
    r = await api.put(f"/blobs/{sha(whole)}", content=body())
    assert r.status_code == 201 and r.json()["size"] == len(whole)
    assert (await api.get(f"/blobs/{sha(whole)}")).content == whole


async def test_download_headers_and_ranges(api: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 40
    name = await upload(api, data)
    r = await api.get(f"/blobs/{name}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"{name}"'
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == str(len(data))

    head = await api.head(f"/blobs/{name}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""

    cases = {"bytes=0-9": (0, 10), "bytes=100-": (100, len(data)), "bytes=-5": (len(data) - 5, len(data)),
             "bytes=10000-99999": (10000, len(data)), "bytes=5-5": (5, 6)}
    for header, (start, end) in cases.items():
        r = await api.get(f"/blobs/{name}", headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data[start:end], header
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"
        assert r.headers["content-length"] == str(end - start)

    r = await api.get(f"/blobs/{name}", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and error_code(r) == "range_not_satisfiable"
    assert r.headers["content-range"] == f"bytes */{len(data)}"
    # what is not understood is ignored: the whole blob
    for header in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=x-y"):
        r = await api.get(f"/blobs/{name}", headers={"Range": header})
        assert r.status_code == 200 and r.content == data, header
    # If-Range naming another representation: the whole blob
    r = await api.get(f"/blobs/{name}", headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == data
    r = await api.get(f"/blobs/{name}", headers={"If-None-Match": f'"{name}"'})
    assert r.status_code == 304

    missing = hashlib.sha256(b"absent").hexdigest()
    assert (await api.get(f"/blobs/{missing}")).status_code == 404
    assert (await api.head(f"/blobs/{missing}")).status_code == 404


async def test_size_limits(make_app: AppFactory) -> None:
    app = make_app(max_blob_bytes=1000, max_body_bytes=2000)
    async with client(app) as api:
        big = b"x" * 1001
        r = await api.put(f"/blobs/{sha(big)}", content=big)
        assert r.status_code == 413 and error_code(r) == "payload_too_large"

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
            yield big[:600]
            yield big[600:]

        r = await api.put(f"/blobs/{sha(big)}", content=chunked())
        assert r.status_code == 413
        assert (await api.post("/blobs/missing", json={"sha256": [sha(big)]})).json()["missing"] == [sha(big)]
        manifest = [file_entry(f"f{i}", b"x") for i in range(50)]
        r = await api.post(f"/products/{PRI}/versions", json={"manifest": manifest})
        assert r.status_code == 413 and error_code(r) == "payload_too_large"


async def test_interrupted_uploads_are_cleaned_up_when_old(app: FastAPI) -> None:
    store = app.state.pvc.blobs
    old, fresh = store.tmp / "up-old", store.tmp / "up-fresh"
    old.write_bytes(b"half")
    fresh.write_bytes(b"in progress elsewhere")
    os.utime(old, (0, 0))
    BlobStore(store.root, store.db)  # what a service start does
    assert not old.exists() and fresh.exists()
