"""Routes: workspaces, who declared a product as an output, and snapshots."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from pvc_client import parse_pri
from sqlalchemy import Connection
from starlette.responses import Response

from . import _workspaces as ws
from ._auth import Principal, require
from ._json import json_response
from ._models import SnapshotBody, WorkspaceBody
from ._names import now_us, parse_as_of
from ._state import run_db, run_read, state
from .config import API_PREFIX

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["workspaces"])

T = TypeVar("T")


async def _read_workspace(request: Request, name: str, as_of: str | None,
                          fn: Callable[[Connection, str, int], T]) -> T:
    """``fn(conn, name, when)`` for the workspace named ``name``, as the store was at ``as_of``."""
    ws.check_name(name)
    when = parse_as_of(as_of, now_us())
    return await run_read(request, fn, name, when)


@router.get("/workspaces")
async def list_workspaces(request: Request, as_of: str | None = None,
                          _: Principal = Depends(require("read"))) -> Response:
    when = parse_as_of(as_of, now_us())
    return json_response({"workspaces": await run_read(request, ws.list_workspaces, when)})


@router.get("/workspaces/{name}")
async def get_workspace(request: Request, name: str, as_of: str | None = None,
                        _: Principal = Depends(require("read"))) -> Response:
    return json_response(await _read_workspace(request, name, as_of, ws.get_workspace))


@router.put("/workspaces/{name}")
async def put_workspace(request: Request, name: str, body: WorkspaceBody,
                        who: Principal = Depends(require("publish"))) -> Response:
    ws.check_name(name)
    spec = ws.normalize_spec(body)
    st = state(request)
    saved = await run_db(ws.put_workspace, st.db, name, spec, who.author(body.author))
    st.notifier.notify()
    return json_response(saved)


@router.delete("/workspaces/{name}", status_code=204)
async def delete_workspace(request: Request, name: str,
                           who: Principal = Depends(require("publish"))) -> Response:
    ws.check_name(name)
    st = state(request)
    await run_db(ws.delete_workspace, st.db, name, who.author(None))
    st.notifier.notify()
    return Response(status_code=204)


@router.get("/workspaces/{name}/history")
async def workspace_history(request: Request, name: str, as_of: str | None = None,
                            _: Principal = Depends(require("read"))) -> Response:
    return json_response({"history": await _read_workspace(request, name, as_of, ws.workspace_history)})


@router.get("/outputs/{pri}")
async def declared_outputs(request: Request, pri: str, as_of: str | None = None,
                           _: Principal = Depends(require("read"))) -> Response:
    """The workspaces whose newest revision (as of the time) declares the product an output."""
    name = parse_pri(pri).text  # a PRI@N or a malformed name is 400 invalid_pri
    when = parse_as_of(as_of, now_us())
    return json_response(await run_read(request, ws.declared_outputs, name, when))


@router.post("/snapshots", status_code=201)
async def create_snapshot(request: Request, body: SnapshotBody,
                          _: Principal = Depends(require("publish"))) -> Response:
    st = state(request)
    snapshot, created = await run_db(ws.create_snapshot, st.db, body.record)
    if created:
        st.notifier.notify()
    return json_response(snapshot, status=201 if created else 200)


@router.get("/snapshots/{sid}")
async def get_snapshot(request: Request, sid: str, _: Principal = Depends(require("read"))) -> Response:
    ws.check_snapshot_id(sid)
    return json_response(await run_read(request, ws.get_snapshot, sid))
