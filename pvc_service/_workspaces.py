"""Workspaces (named, revisioned resolver specs) and snapshots (immutable records).

Every change to a workspace is a new revision; a deletion is a revision marked
``deleted``. A snapshot's id is derived from its content, so posting the same
record twice yields the same snapshot.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pvc_client import format_time, parse_label, parse_pri, parse_ref, parse_time
from sqlalchemy import Connection, Select, func, select

from ._catalog import iso
from ._db import Database
from ._errors import Invalid, NotFound, must_match
from ._events import record_event
from ._models import WorkspaceBody
from ._names import now_us
from ._schema import snapshots, workspace_revisions, workspaces

__all__ = ["check_name", "normalize_spec", "put_workspace", "delete_workspace", "get_workspace",
           "list_workspaces", "workspace_history", "snapshot_id", "check_snapshot_id",
           "create_snapshot", "get_snapshot"]

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_STRATEGY_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SNAPSHOT_RE = re.compile(r"[0-9a-f]{16}")


def check_name(name: str) -> str:
    return must_match(_NAME_RE, name, "a workspace name is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")


def normalize_spec(body: WorkspaceBody) -> dict[str, Any]:
    """The stored form of a spec: grammar checked, pin made absolute ISO text."""
    if _STRATEGY_RE.fullmatch(body.strategy) is None:
        raise Invalid(f"strategy {body.strategy!r}: a strategy name is [a-z][a-z0-9_]*")
    overrides = []
    for text in body.overrides:
        ref = parse_ref(text)
        if ref.number is None:
            raise Invalid(f"override {text!r}: an override names an exact version (PRI@N)", "invalid_pri")
        overrides.append(str(ref))
    return {
        "roots": [str(parse_ref(r)) for r in body.roots],
        "strategy": body.strategy,
        # a relative pin (-3d) is fixed now, so the workspace does not drift
        "pin": None if body.pin is None else format_time(parse_time(body.pin)),
        "prefer": [parse_label(p) for p in body.prefer],
        "overrides": overrides,
        "outputs": list(dict.fromkeys(str(parse_pri(p)) for p in body.outputs)),
    }


def _workspace_json(name: str, row: Any) -> dict[str, Any]:
    return {**row.spec, "name": name, "revision": row.revision, "changed_at": iso(row.changed_us),
            "author": row.author, "deleted": bool(row.deleted)}


def _current(conn: Connection, name: str) -> tuple[int | None, Any]:
    ws_id = conn.execute(select(workspaces.c.id).where(workspaces.c.name == name)).scalar()
    if ws_id is None:
        return None, None
    row = conn.execute(select(workspace_revisions).where(workspace_revisions.c.workspace_id == ws_id)
                       .order_by(workspace_revisions.c.revision.desc()).limit(1)).first()
    return ws_id, row


def put_workspace(db: Database, name: str, spec: dict[str, Any], author: str) -> dict[str, Any]:
    with db.write() as conn:
        now = now_us()
        ws_id, last = _current(conn, name)
        if ws_id is None:
            ws_id = conn.execute(workspaces.insert().values(name=name, created_us=now)).inserted_primary_key[0]
        return _revise(conn, ws_id, name, last, spec, author, deleted=False, now=now)


def delete_workspace(db: Database, name: str, author: str) -> None:
    with db.write() as conn:
        now = now_us()
        ws_id, last = _current(conn, name)
        if ws_id is None or last.deleted:
            raise NotFound(f"no workspace {name!r}")
        _revise(conn, ws_id, name, last, last.spec, author, deleted=True, now=now)


def _revise(conn: Connection, ws_id: int, name: str, last: Any, spec: dict[str, Any], author: str, *,
            deleted: bool, now: int) -> dict[str, Any]:
    revision = 1 if last is None else last.revision + 1
    changed = now if last is None else max(now, last.changed_us)
    values = {"workspace_id": ws_id, "revision": revision, "changed_us": changed, "author": author,
              "deleted": deleted, "spec": spec}
    conn.execute(workspace_revisions.insert().values(**values))
    record_event(conn, "workspace", now, None, name=name, revision=revision)
    return {**spec, "name": name, "revision": revision, "changed_at": iso(changed), "author": author,
            "deleted": deleted}


def _revisions(name: str, as_of: int) -> Select[Any]:
    """The revisions of the workspace ``name`` made at or before ``as_of``, in no order."""
    return (
        select(workspace_revisions)
        .join(workspaces, workspaces.c.id == workspace_revisions.c.workspace_id)
        .where(workspaces.c.name == name, workspace_revisions.c.changed_us <= as_of)
    )


def get_workspace(conn: Connection, name: str, as_of: int) -> dict[str, Any]:
    row = conn.execute(_revisions(name, as_of).order_by(workspace_revisions.c.revision.desc()).limit(1)).first()
    if row is None or row.deleted:
        raise NotFound(f"no workspace {name!r} as of {iso(as_of)}")
    return _workspace_json(name, row)


def list_workspaces(conn: Connection, as_of: int) -> list[dict[str, Any]]:
    newest = (
        select(workspace_revisions.c.workspace_id, func.max(workspace_revisions.c.revision).label("revision"))
        .where(workspace_revisions.c.changed_us <= as_of)
        .group_by(workspace_revisions.c.workspace_id).subquery()
    )
    rows = conn.execute(
        select(workspaces.c.name, workspace_revisions)
        .join(workspace_revisions, workspace_revisions.c.workspace_id == workspaces.c.id)
        .join(newest, (newest.c.workspace_id == workspace_revisions.c.workspace_id)
              & (newest.c.revision == workspace_revisions.c.revision))
        .order_by(workspaces.c.name)
    ).all()
    return [_workspace_json(r.name, r) for r in rows if not r.deleted]


def workspace_history(conn: Connection, name: str, as_of: int) -> list[dict[str, Any]]:
    rows = conn.execute(_revisions(name, as_of).order_by(workspace_revisions.c.revision)).all()
    if not rows:
        raise NotFound(f"no workspace {name!r}")
    return [_workspace_json(name, r) for r in rows]


def canonical_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def snapshot_id(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(record)).hexdigest()[:16]


def check_snapshot_id(text: str) -> str:
    return must_match(_SNAPSHOT_RE, text, "a snapshot id is 16 lowercase hex characters")


def _snapshot_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "created_at": iso(row.created_us), "record": row.record}


def create_snapshot(db: Database, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Store a record (once). Returns (snapshot, created)."""
    sid = snapshot_id(record)
    with db.write() as conn:
        row = conn.execute(select(snapshots).where(snapshots.c.id == sid)).first()
        if row is not None:
            return _snapshot_json(row), False
        now = now_us()
        conn.execute(snapshots.insert().values(id=sid, created_us=now, record=record))
        record_event(conn, "snapshot", now, None, snapshot_id=sid)
        return {"id": sid, "created_at": iso(now), "record": record}, True


def get_snapshot(conn: Connection, sid: str) -> dict[str, Any]:
    row = conn.execute(select(snapshots).where(snapshots.c.id == sid)).first()
    if row is None:
        raise NotFound(f"no snapshot {sid}")
    return _snapshot_json(row)
