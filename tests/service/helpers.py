"""Small helpers for the service tests: upload blobs and publish through the HTTP API."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

__all__ = ["sha", "upload", "publish", "error_code", "file_entry"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(path: str, data: bytes, mode: int = 0o644) -> dict[str, Any]:
    return {"path": path, "type": "file", "size": len(data), "sha256": sha(data), "mode": mode}


async def upload(api: httpx.AsyncClient, data: bytes) -> str:
    r = await api.put(f"/blobs/{sha(data)}", content=data)
    assert r.status_code in (200, 201), r.text
    return sha(data)


async def publish(api: httpx.AsyncClient, pri: str, files: dict[str, bytes] | None = None, *,
                  expect: int = 201, **body: Any) -> dict[str, Any]:
    """Upload ``files`` (flat names) and publish them as a version of ``pri``."""
    files = {"scene.usd": pri.encode()} if files is None else files
    for data in files.values():
        await upload(api, data)
    manifest = [file_entry(path, data) for path, data in sorted(files.items())]
    r = await api.post(f"/products/{pri}/versions", json={"manifest": manifest, **body})
    assert r.status_code == expect, r.text
    return r.json()


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return body["error"]["code"]


class StatementCount:
    """``async with StatementCount(app, api) as queries: n = await queries("GET", path)``:
    the SQL statements one request ran (the request must succeed)."""

    def __init__(self, app: Any, api: httpx.AsyncClient) -> None:
        self.engine = app.state.pvc.db.engine
        self.api = api
        self.statements: list[str] = []

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    async def __aenter__(self) -> Any:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._count)
        return self.queries

    async def __aexit__(self, *exc: object) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._count)

    async def queries(self, method: str, path: str, **kwargs: Any) -> int:
        self.statements.clear()
        r = await self.api.request(method, path, **kwargs)
        assert r.status_code == 200, r.text
        return len(self.statements)
