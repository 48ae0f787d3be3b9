"""In-process service fixtures: the app over ``httpx.ASGITransport``, on SQLite and PostgreSQL.

``db_url`` is parametrized: every test using it runs on SQLite and (marked
``postgres``) on the PostgreSQL database of ``pg_url``, emptied before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from pvc_service._db import normalize_db_url
from pvc_service._schema import metadata
from pvc_service.app import create_app
from pvc_service.config import ServiceConfig

API = "http://pvc.test/api/v1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    engine = create_engine(normalize_db_url(url, Path(".")))
    try:
        # a clean store for every test (emptying is much faster than re-creating)
        metadata.create_all(engine)
        names = ", ".join(t.name for t in metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def make_app(tmp_path: Path, db_url: str | None) -> Iterator[AppFactory]:
    """Build apps over one store (same data directory and database)."""
    apps: list[FastAPI] = []

    def factory(**options: Any) -> FastAPI:
        app = create_app(ServiceConfig(data_dir=tmp_path / "data", db_url=db_url, **options))
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.state.pvc.db.dispose()


def client(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API, headers=headers,
                             timeout=60)


@pytest.fixture
async def app(make_app: AppFactory) -> FastAPI:
    return make_app()


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as http:
        yield http
