"""Concurrent publishes, database outages, unexpected errors, metrics and the OpenAPI document."""

from __future__ import annotations

import re

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from pvc_service._db import normalize_db_url

from .conftest import AppFactory, client
from .helpers import error_code, file_entry, publish, sha, upload

pytestmark = pytest.mark.anyio

PRI = "spies:100:10-lgt:walter"
N = 16


async def _publish_concurrently(api: httpx.AsyncClient, pri: str, n: int) -> list[int]:
    payloads = [f"payload {i}".encode() for i in range(n)]
    for p in payloads:
        await upload(api, p)
    numbers: list[int] = []

    async def one(p: bytes) -> None:
        r = await api.post(f"/products/{pri}/versions", json={"manifest": [file_entry("f", p)],
                                                               "labels": ["published"]})
        assert r.status_code == 201, r.text
        numbers.append(r.json()["number"])

    async with anyio.create_task_group() as tg:
        for p in payloads:
            tg.start_soon(one, p)
    return numbers


async def test_concurrent_publishes_get_distinct_consecutive_numbers(make_app: AppFactory) -> None:
    # two apps over one store stand for two service processes
    apps = [make_app(), make_app()]
    async with client(apps[0]) as a, client(apps[1]) as b:
        # the first publishes race to create the product too
        numbers: list[int] = []

        async def run(api: httpx.AsyncClient) -> None:
            numbers.extend(await _publish_concurrently(api, PRI, N))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, a)
            tg.start_soon(run, b)
        assert sorted(numbers) == list(range(1, 2 * N + 1))
        versions = (await a.get(f"/products/{PRI}/versions")).json()["versions"]
        assert [v["number"] for v in versions] == list(range(1, 2 * N + 1))
        created = [v["created_at"] for v in versions]
        assert created == sorted(created)  # numbers follow time
        assert (await a.get("/products")).json()["products"][0]["product_id"] == versions[0]["product_id"]
        feed = (await a.get("/events", params={"limit": 10_000})).json()["events"]
        published = [e["number"] for e in feed if e["kind"] == "publish"]
        assert sorted(published) == list(range(1, 2 * N + 1))
        label = (await a.get(f"/products/{PRI}/labels")).json()["labels"]["published"]
        assert label == 2 * N  # the label follows the newest publish


async def test_database_outage_is_503_and_recovers(app: FastAPI, db_url: str | None) -> None:
    async with client(app) as api:
        await publish(api, PRI)
        db = app.state.pvc.db
        healthy = db.engine
        # a server that refuses connections stands for a database that is down
        if db.dialect == "postgresql":
            db.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                                      connect_args={"connect_timeout": 2})
        else:
            db.engine = create_engine("sqlite:////nonexistent-dir/pvc.sqlite3")
        try:
            r = await api.get(f"/products/{PRI}")
            assert r.status_code == 503 and error_code(r) == "unavailable"
            r = await api.post(f"/products/{PRI}/versions", json={"manifest": []})
            assert r.status_code == 503 and error_code(r) == "unavailable"
            r = await api.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "unavailable"
        finally:
            db.engine.dispose()
            db.engine = healthy
        if db.dialect == "postgresql":
            # connections killed under the pool (a restarted server) are replaced
            assert db_url is not None
            killer = create_engine(normalize_db_url(db_url, app.state.pvc.config.data_dir))
            with killer.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            killer.dispose()
        assert (await api.get(f"/products/{PRI}")).json()["latest"] == 1
        assert (await api.get("/health")).json()["status"] == "ok"


async def test_unexpected_error_is_500_with_request_id(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/broken", broken)
    async with client(app) as api:
        r = await api.get("/broken")
    assert r.status_code == 500 and error_code(r) == "internal"
    request_id = r.headers["x-request-id"]
    assert request_id in r.json()["error"]["message"]
    logged = [rec for rec in caplog.records if rec.name == "pvc_service.error"]
    assert logged and logged[0].exc_info is not None and request_id in logged[0].getMessage()


async def test_access_log_and_metrics(api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="pvc_service.access")
    data = b"metric bytes"
    await publish(api, PRI, {"f": data})
    await api.get(f"/blobs/{sha(data)}")
    await api.get(f"/products/{PRI}")
    await api.get("/products/spies-nothing")
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "pvc_service.access"]
    assert any(re.fullmatch(rf"GET /api/v1/products/{re.escape(PRI)} 200 \d+\.\dms", line) for line in lines)

    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    body = r.text
    assert 'pvc_http_requests_total{method="GET",route="/api/v1/products/{pri}",status="200"} 1' in body
    assert 'pvc_http_requests_total{method="GET",route="/api/v1/products/{pri}",status="404"} 1' in body
    assert "pvc_publishes_total 1" in body
    assert f"pvc_blob_bytes_in_total {len(data)}" in body
    assert f"pvc_blob_bytes_out_total {len(data)}" in body
    assert re.search(r'pvc_http_request_duration_seconds_count\{route="/api/v1/products/\{pri\}"\} 2', body)


async def test_openapi_document(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in ("/api/v1/products/{pri}/versions", "/api/v1/closure", "/api/v1/events",
                 "/api/v1/blobs/{sha256}", "/api/v1/workspaces/{name}", "/api/v1/snapshots"):
        assert path in paths, path
    assert "PublishBody" in doc["components"]["schemas"]
