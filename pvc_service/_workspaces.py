"""Workspaces (named, revisioned resolver specs) and snapshots (immutable records).

Every change to a workspace is a new revision; a deletion is a revision marked
``deleted``. A snapshot's id is derived from its content, so posting the same
record twice yields the same snapshot.

A workspace's ``outputs`` are the products its artist makes. Who declared a
product is read from the newest revision of every workspace
(`declared_outputs`); a version may name the workspace revision it was
published from (`check_origin`, and ``version_origins`` in the schema).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pvc_client import InvalidPRI, format_time, parse_label, parse_pri, parse_ref, parse_time
from sqlalchemy import Connection, Select, Text, func, or_, select, type_coerce

from ._catalog import iso
from ._db import Database
from ._errors import Invalid, NotFound, must_match
from ._events import record_event
from ._models import WorkspaceBody
from ._names import find_product, now_us
from ._schema import product_names, snapshots, workspace_revisions, workspaces

__all__ = ["check_name", "normalize_spec", "put_workspace", "delete_workspace", "get_workspace",
           "list_workspaces", "workspace_history", "declared_outputs", "check_origin", "snapshot_id",
           "check_snapshot_id", "create_snapshot", "get_snapshot"]

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
        # in the order given, each once: the order is the artist's, a repeat is a slip
        "outputs": list(dict.fromkeys(_output(text) for text in body.outputs)),
    }


def _output(text: str) -> str:
    """An output as stored: a product's PRI, without a version (an output is what the next version is of)."""
    if "@" in text:
        raise Invalid(f"output {text[:300]!r}: an output names a product (PRI), not a version or label "
                      f"(PRI@N, PRI@label)", "invalid_pri")
    try:
        return parse_pri(text).text
    except InvalidPRI as error:
        raise Invalid(f"output: {error.message}", "invalid_pri") from None


def _record(name: str, spec: dict[str, Any], revision: int, changed_us: int, author: str,
            deleted: bool) -> dict[str, Any]:
    # revisions stored before outputs existed have no such key: they declared none
    return {"outputs": [], **spec, "name": name, "revision": revision, "changed_at": iso(changed_us),
            "author": author, "deleted": bool(deleted)}


def _workspace_json(name: str, row: Any) -> dict[str, Any]:
    return _record(name, row.spec, row.revision, row.changed_us, row.author, row.deleted)


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
    return _record(name, spec, revision, changed, author, deleted)


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


def _newest_revisions(as_of: int) -> Select[Any]:
    """(name, revision columns...) of each workspace's newest revision made at or before ``as_of``."""
    newest = (
        select(workspace_revisions.c.workspace_id, func.max(workspace_revisions.c.revision).label("revision"))
        .where(workspace_revisions.c.changed_us <= as_of)
        .group_by(workspace_revisions.c.workspace_id).subquery()
    )
    return (
        select(workspaces.c.name, workspace_revisions)
        .join(workspace_revisions, workspace_revisions.c.workspace_id == workspaces.c.id)
        .join(newest, (newest.c.workspace_id == workspace_revisions.c.workspace_id)
              & (newest.c.revision == workspace_revisions.c.revision))
    )


def list_workspaces(conn: Connection, as_of: int) -> list[dict[str, Any]]:
    rows = conn.execute(_newest_revisions(as_of).order_by(workspaces.c.name)).all()
    return [_workspace_json(r.name, r) for r in rows if not r.deleted]


def workspace_history(conn: Connection, name: str, as_of: int) -> list[dict[str, Any]]:
    rows = conn.execute(_revisions(name, as_of).order_by(workspace_revisions.c.revision)).all()
    if not rows:
        raise NotFound(f"no workspace {name!r}")
    return [_workspace_json(name, r) for r in rows]


def declared_outputs(conn: Connection, pri: str, as_of: int) -> dict[str, Any]:
    """Every workspace whose newest revision as of ``as_of`` declares the product ``pri`` an output.

    ``pri`` may be any name the product had by then: a workspace that declared
    it under an older name (before a rename) declared the same product. A name
    no product had by then is a product to come; it is matched as written.
    """
    product = find_product(conn, pri, as_of)
    if product is None:
        canonical, names = pri, {pri}
    else:
        canonical = product.pri
        # every name it had by then (``pri`` among them); a name given later was another product then
        names = set(conn.execute(select(product_names.c.name).where(
            product_names.c.product_id == product.id, product_names.c.began_us <= as_of)).scalars())
    # Specs are JSON text, so no index can answer "which outputs hold X"; a text
    # match on the stored JSON ('"X"') keeps out the specs that cannot hold it
    # without decoding them all (a spec can list 100,000 roots). It also matches
    # a root or override naming X, so the decoded outputs decide. autoescape:
    # '_' is a LIKE wildcard and common in PRIs.
    spec_text = type_coerce(workspace_revisions.c.spec, Text)
    may_hold = or_(*(spec_text.contains(json.dumps(name), autoescape=True) for name in sorted(names)))
    rows = conn.execute(_newest_revisions(as_of).where(may_hold)).all()
    found = [
        {"name": r.name, "revision": r.revision, "changed_at": iso(r.changed_us), "author": r.author}
        for r in rows
        if not r.deleted and not names.isdisjoint(r.spec.get("outputs") or ())
    ]
    # sorted here, not by the database: PostgreSQL orders text by its collation, SQLite by code point
    found.sort(key=lambda w: w["name"])
    return {"pri": canonical, "workspaces": found}


def check_origin(conn: Connection, name: str, revision: int) -> None:
    """404 unless the workspace ``name`` exists now and ``revision`` is one of its specs.

    Called inside a publish's write transaction, so the revision checked is
    the one recorded. The revision need not be the newest: a mount publishes
    from the revision it runs, which a TD may have changed since. A revision
    that deleted the workspace is no context anyone worked in, and a deleted
    workspace takes no new versions.
    """
    ws_id, last = _current(conn, name)
    if ws_id is None or last is None:
        raise NotFound(f"no workspace {name!r}: a version's workspace must exist")
    if last.deleted:
        raise NotFound(f"workspace {name!r} was deleted (revision {last.revision}); it takes no new versions")
    if revision > last.revision:
        raise NotFound(f"workspace {name!r} has no revision {revision} (its newest is {last.revision})")
    deleted = conn.execute(select(workspace_revisions.c.deleted).where(
        workspace_revisions.c.workspace_id == ws_id, workspace_revisions.c.revision == revision)).scalar()
    if deleted is None:
        raise NotFound(f"workspace {name!r} has no revision {revision}")
    if deleted:
        raise NotFound(f"revision {revision} of workspace {name!r} is a deletion, not a spec to work in")


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
