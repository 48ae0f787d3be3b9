"""Pages at size (slow): a store of 50,000 products built by the importer, on SQLite and PostgreSQL.

Pages merge into the whole answer; a page costs the same statements in a
store of 2,000 products as in one of 50,000; and no statement of a page, a
closure or a lookup scans a whole table (the plans are read, not timed).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from bench.gen_history import history, layout
from pvc_service._import import main as import_main
from pvc_service.app import create_app
from pvc_service.config import ServiceConfig
from tests.support.service import pg_database

from .conftest import client

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

BIG, SMALL, SEED = 50_000, 2_000, 1
# the tables a page must never read whole (PostgreSQL's plans name them; SQLite's may name an alias)
TABLES = ("products", "product_names", "versions", "dependencies", "label_moves", "events")


def _build(tmp_path: Path, products: int, data: Path, db_url: str | None) -> list[str]:
    """Import a generated history of ``products`` products; their names, in layout order."""
    path = tmp_path / f"h{products}.jsonl"
    with path.open("w") as out:
        for record in history(products, 3, files=2, seed=SEED):
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    args = [str(path), "--data", str(data), "--allow-missing-blobs"] + (["--db", db_url] if db_url else [])
    assert import_main(args) == 0
    path.unlink()
    return [pri for pri, _ in layout(products, random.Random(SEED))]


@contextlib.contextmanager
def _small_db(db_url: str | None) -> Iterator[str | None]:
    if db_url is None:
        yield None
    else:
        with pg_database(os.environ["PRODFS_TEST_PG_URL"]) as url:
            yield url


class _Recorder:
    """The statements (and their parameters) an app's engine runs while recording."""

    def __init__(self, app: FastAPI) -> None:
        self.engine = app.state.pvc.db.engine
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> _Recorder:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        self.statements.append((statement, params))

    def scans(self) -> list[str]:
        """The plan lines of the recorded statements that read one of `TABLES` whole."""
        found = []
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            for statement, params in self.statements:
                if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                    continue
                if self.engine.dialect.name == "sqlite":
                    cur.execute("EXPLAIN QUERY PLAN " + statement, params)
                    lines = [row[3] for row in cur.fetchall()]
                    # "SCAN t" (or "SCAN t USING ... INDEX", the whole index) of a table or
                    # an alias of one; a CTE's or subquery's own rows may be scanned
                    found += [line for line in lines if line.startswith("SCAN ")
                              and not line.split()[1].startswith(("(", "anon_", "reach"))]
                else:
                    cur.execute("EXPLAIN " + statement, params)
                    lines = [row[0] for row in cur.fetchall()]
                    found += [line for line in lines if any(f"Seq Scan on {t} " in line + " " for t in TABLES)]
            raw.rollback()
        finally:
            raw.close()
        return found


def _requests(names: list[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """The requests whose cost must follow their answer, not the store (same shape in both stores)."""
    shots = [n for n in names if n.endswith("-lgt")][:100]
    middle = names[len(names) // 2]
    return {
        "index page": ("GET", "/index", {"params": {"after": names[40], "limit": 500}}),
        "index prefix page": ("GET", "/index", {"params": {"prefix": names[0].split(":")[0] + ":1", "limit": 500}}),
        "products page": ("GET", "/products", {"params": {"after": names[40], "limit": 500}}),
        "first lookup": ("POST", "/closure", {"json": {"roots": [middle], "depth": 0, "missing": "omit"}}),
        "workspace closure": ("POST", "/closure", {"json": {"roots": shots}}),
        "workspace closure page": ("POST", "/closure", {"json": {"roots": shots, "limit": 200}}),
        "version": ("GET", f"/products/{middle}/versions/latest", {}),
    }


async def _costs(app: FastAPI, names: list[str]) -> tuple[dict[str, int], list[str]]:
    """Statements per request, and the whole-table scans in their plans."""
    counts, scans = {}, []
    async with client(app) as api:
        for what, (method, path, kwargs) in _requests(names).items():
            with _Recorder(app) as recorder:
                r = await api.request(method, path, **kwargs)
            assert r.status_code == 200, (what, r.text)
            counts[what] = len(recorder.statements)
            scans += [f"{what}: {line}" for line in recorder.scans()]
    return counts, scans


async def _pages(api: httpx.AsyncClient, method: str, path: str, limit: int, **kwargs: Any) -> dict[str, Any]:
    """All pages of one answer, merged; the next pages asked as of the first page's time."""
    first: dict[str, Any] | None = None
    products: dict[str, Any] = {}
    after = None
    while True:
        if method == "GET":
            params = {**kwargs.get("params", {}), "limit": limit}
            if first is not None:
                params.update(after=after, as_of=first["as_of"])
            r = await api.get(path, params=params)
        else:
            body = {**kwargs["json"], "limit": limit}
            if first is not None:
                body.update(after=after, as_of=first["as_of"])
            r = await api.post(path, json=body)
        assert r.status_code == 200, r.text
        page = r.json()
        first = first or page
        assert len(page["products"]) <= limit and set(page["products"]).isdisjoint(products)
        products.update(page["products"])
        after = page["next"]
        if after is None:
            return {**first, "products": dict(sorted(products.items())), "next": None}


async def test_pages_at_size(tmp_path: Path, db_url: str | None) -> None:
    with _small_db(db_url) as small_url:
        small_names = _build(tmp_path, SMALL, tmp_path / "small", small_url)
        small = create_app(ServiceConfig(data_dir=tmp_path / "small", db_url=small_url))
        try:
            # (a small store's plans may scan: 2,000 rows are cheaper read than probed)
            small_counts, _ = await _costs(small, small_names)
        finally:
            small.state.pvc.db.dispose()

    names = _build(tmp_path, BIG, tmp_path / "big", db_url)
    app = create_app(ServiceConfig(data_dir=tmp_path / "big", db_url=db_url))
    try:
        counts, scans = await _costs(app, names)
        assert counts == small_counts  # a page costs the same statements in a store 25 times larger
        assert not scans, scans

        async with client(app) as api:
            whole = (await api.get("/index")).json()
            assert len(whole["products"]) == BIG and sorted(whole["products"]) == sorted(names)
            merged = await _pages(api, "GET", "/index", 12_000, params={"as_of": whole["as_of"]})
            assert merged == whole

            prefix = {"prefix": names[0].split(":")[0] + ":1", "as_of": whole["as_of"]}
            assert await _pages(api, "GET", "/index", 700, params=prefix) == (
                await api.get("/index", params=prefix)).json()

            shots = {"roots": [n for n in names if n.endswith("-lgt")][:100], "as_of": whole["as_of"]}
            closure = (await api.post("/closure", json=shots)).json()
            assert len(closure["products"]) > 300
            assert await _pages(api, "POST", "/closure", 100, json=shots) == closure

            listed, after = [], None
            while True:
                params: dict[str, Any] = {"limit": 10_000, "as_of": whole["as_of"]}
                page = (await api.get("/products", params={**params, **({"after": after} if after else {})})).json()
                listed += [p["pri"] for p in page["products"]]
                if (after := page["next"]) is None:
                    break
            assert listed == list(whole["products"])
    finally:
        app.state.pvc.db.dispose()
