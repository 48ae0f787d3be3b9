"""Routes: health, metrics and the change feed."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import PlainTextResponse, Response

from . import __version__
from ._auth import Principal, require
from ._db import is_outage
from ._events import events_after
from ._json import json_response
from ._state import run_db, state
from .config import API_PREFIX

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["system"])


@router.get("/health")
async def health(request: Request) -> Response:
    st = state(request)
    body: dict[str, Any] = {"status": "ok", "database": st.db.dialect, "version": __version__}
    try:
        await run_db(st.db.ping)
    except Exception as error:
        if not is_outage(error):
            raise
        body["status"] = "unavailable"
        body["error"] = {"code": "unavailable", "message": "the database does not answer"}
        return json_response(body, status=503)
    return json_response(body)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    return PlainTextResponse(state(request).metrics.render(),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/events")
async def events(request: Request, after: int = Query(0, ge=0, le=2**63 - 1),
                 timeout: float = Query(0, ge=0, le=60, allow_inf_nan=False),
                 limit: int = Query(1000, ge=1, le=10_000),
                 _: Principal = Depends(require("read"))) -> Response:
    st = state(request)

    def read() -> list[dict[str, Any]]:
        with st.db.read() as conn:
            return events_after(conn, after, limit)

    deadline = anyio.current_time() + timeout
    while True:
        # taken before the query, so a commit landing in between still wakes us
        wake = st.notifier.current()
        found = await run_db(read)
        remaining = deadline - anyio.current_time()
        if found or remaining <= 0 or st.stopping:
            break
        await st.notifier.wait(wake, min(remaining, st.config.event_poll_seconds))
    cursor = found[-1]["id"] if found else after
    return json_response({"events": found, "cursor": cursor})
