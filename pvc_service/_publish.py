"""Changing products: publish, rename, label moves. Each is one write transaction.

Every check runs before the first write, inside the transaction that writes,
so what was checked is what gets written: a publish is all or nothing, and its
number, label moves and feed event commit together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pvc_client import LATEST, Entry, Ref, parse_label
from sqlalchemy import Connection, exc, func, select

from ._catalog import find_version, iso
from ._db import Database
from ._errors import Conflict, Invalid, NotFound, ServiceError
from ._events import record_event
from ._names import (
    Product,
    canonical_names,
    chunks,
    labels_as_of,
    find_product,
    lookup_product,
    now_us,
    product_by_id,
)
from ._schema import blobs, dependencies, label_moves, product_names, products, version_origins, versions
from ._workspaces import check_origin

__all__ = ["PublishInput", "Published", "publish", "rename", "set_label", "delete_label"]

_RETRIES = 3
_SHOWN = 10  # missing hashes named in an error message


@dataclass(slots=True)
class PublishInput:
    """A publish request, already checked against the grammar and manifest rules."""

    name: str
    entries: list[Entry]
    dependencies: list[Ref] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    message: str = ""
    author: str = "anonymous"
    at_us: int | None = None
    # (workspace name, revision) the version was made in, checked to exist
    workspace: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Published:
    product_id: int
    number: int
    created_us: int
    # the time to answer as of, so that the answer shows the new version
    view_us: int


def settable_label(text: str) -> str:
    """A label a publish or a move may set: any valid label but ``latest``, which is always the newest."""
    label = parse_label(text)
    if label == LATEST:
        raise Invalid("'latest' always means the newest version; it cannot be set")
    return label


def _retrying(db: Database, work: Any, *args: Any) -> Any:
    # Writers are serialized (see _db), so a unique violation means another
    # process raced us outside that lock; a fresh transaction sees its result.
    for attempt in range(_RETRIES):
        try:
            with db.write() as conn:
                return work(conn, *args)
        except exc.IntegrityError:
            if attempt == _RETRIES - 1:
                raise Conflict("a concurrent change got in the way; retry") from None
    raise AssertionError("unreachable")


def publish(db: Database, req: PublishInput) -> Published:
    return _retrying(db, _publish, req)


def publish_many(db: Database, reqs: list[PublishInput]) -> list[Published]:
    """Publish every one of ``reqs`` in one transaction: all of them, or (an error naming the
    first refused, by its index) none."""
    return _retrying(db, _publish_each, reqs)


def _publish_each(conn: Connection, reqs: list[PublishInput]) -> list[Published]:
    done = []
    for i, req in enumerate(reqs):
        try:
            done.append(_publish(conn, req))
        except ServiceError as error:
            raise error.prefixed(f"publications[{i}] ({req.name}): ") from None
    return done


def _product_for_name(conn: Connection, name: str) -> int | None:
    # any name ever given: a publish to an alias goes to its product
    return conn.execute(select(product_names.c.product_id).where(product_names.c.name == name)).scalar()


def _publish(conn: Connection, req: PublishInput) -> Published:
    now = now_us()
    product_id = _product_for_name(conn, req.name)
    newest: int | None = None
    last_number = 0
    if product_id is not None:
        row = conn.execute(select(func.max(versions.c.created_us), func.max(versions.c.number))
                           .where(versions.c.product_id == product_id)).one()
        newest, last_number = row[0], row[1] or 0
    if req.at_us is None:
        # clocks of several service processes may disagree by a little: never
        # create a version older than the newest one
        at = max(now, newest or 0)
    else:
        at = req.at_us
        if at > now:
            raise Conflict(f"'at' {iso(at)} is in the future")
        if newest is not None and at < newest:
            raise Conflict(f"'at' {iso(at)} is earlier than the newest version of {req.name} ({iso(newest)})")

    deps = _resolve_dependencies(conn, req.dependencies, at)
    _check_blobs(conn, req.entries)
    if req.workspace is not None:
        check_origin(conn, *req.workspace)

    if product_id is None:
        product_id = int(conn.execute(products.insert().values(created_us=at)).inserted_primary_key[0])
        conn.execute(product_names.insert().values(product_id=product_id, name=req.name, began_us=at))
    number = last_number + 1
    version_id = conn.execute(versions.insert().values(
        product_id=product_id, number=number, created_us=at, author=req.author,
        message=req.message, manifest=[e.to_json() for e in req.entries],
    )).inserted_primary_key[0]
    if req.workspace is not None:
        conn.execute(version_origins.insert().values(version_id=version_id, workspace=req.workspace[0],
                                                     revision=req.workspace[1]))
    if deps:
        conn.execute(dependencies.insert(), [
            {"version_id": version_id, "position": i, "dep_product_id": pid, "dep_number": n}
            for i, (pid, n) in enumerate(deps)
        ])

    view = max(now, at)
    pri = product_by_id(conn, product_id, view).pri
    names = canonical_names(conn, {pid for pid, _ in deps}, view)
    record_event(conn, "publish", now, pri, number=number, created_at=iso(at),
                 dependencies=[f"{names[pid][0]}@{n}" for pid, n in deps])
    for label in req.labels:
        conn.execute(label_moves.insert().values(product_id=product_id, label=label, number=number,
                                                 moved_us=at, author=req.author))
        record_event(conn, "label", now, pri, label=label, number=number)
    return Published(product_id, number, at, view)


def _resolve_dependencies(conn: Connection, refs: list[Ref], at: int) -> list[tuple[int, int]]:
    """(product id, number) of each dependency, as it existed at the new version's time."""
    out: list[tuple[int, int]] = []
    for ref in refs:
        target = find_product(conn, ref.pri.text, at)
        if target is None:
            raise Invalid(f"dependency {ref}: no product {ref.pri} as of {iso(at)}")
        try:
            number = find_version(conn, target, ref.selector or LATEST, at)
        except ServiceError as error:
            if error.code != "not_found":
                raise
            raise Invalid(f"dependency {ref} does not exist as of {iso(at)}") from None
        if (target.id, number) not in out:
            out.append((target.id, number))
    return out


def _check_blobs(conn: Connection, entries: list[Entry]) -> None:
    wanted: dict[str, tuple[int, str]] = {}
    for e in entries:
        if e.type != "file":
            continue
        assert e.sha256 is not None
        seen = wanted.setdefault(e.sha256, (e.size, e.path))
        if seen[0] != e.size:
            raise Invalid(f"{e.path!r} and {seen[1]!r} have the same sha256 but different sizes",
                          "invalid_manifest")
    stored: dict[str, int] = {}
    for batch in chunks(sorted(wanted)):
        rows = conn.execute(select(blobs.c.sha256, blobs.c.size).where(blobs.c.sha256.in_(batch))).all()
        stored.update(rows)
    missing = sorted(sha for sha in wanted if sha not in stored)
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else "")
        raise Invalid(f"{len(missing)} blob(s) not uploaded: {shown}")
    for sha, (size, path) in wanted.items():
        if stored[sha] != size:
            raise Invalid(f"{path!r}: size {size} but blob {sha} has {stored[sha]} bytes", "invalid_manifest")


def rename(db: Database, name: str, new_name: str) -> tuple[Product, int]:
    return _retrying(db, _rename, name, new_name)


def _rename(conn: Connection, name: str, new_name: str) -> tuple[Product, int]:
    now = now_us()
    product = lookup_product(conn, name, now)
    owner = _product_for_name(conn, new_name)
    if owner is not None:
        whose = "an older name of this product" if owner == product.id else "taken by another product"
        raise Conflict(f"{new_name!r} is {whose}; names are never reused")
    began = max(now, product.began_us)
    conn.execute(product_names.insert().values(product_id=product.id, name=new_name, began_us=began))
    record_event(conn, "rename", now, new_name, old_pri=product.pri)
    return Product(product.id, new_name, product.created_us, began), began


def _move_label(conn: Connection, product: Product, label: str, number: int | None, author: str,
                now: int) -> int:
    """Record a move of ``label`` to ``number`` (None: a deletion) and its event; returns its time."""
    # never dated before the label's previous move (another process's clock may be ahead):
    # the position as of T is the newest move by time, so the moves must keep their order
    last = conn.execute(select(func.coalesce(func.max(label_moves.c.moved_us), 0)).where(
        label_moves.c.product_id == product.id, label_moves.c.label == label)).scalar_one()
    moved = max(now, last)
    conn.execute(label_moves.insert().values(product_id=product.id, label=label, number=number,
                                             moved_us=moved, author=author))
    record_event(conn, "label", now, product.pri, label=label, number=number)
    return moved


def set_label(db: Database, name: str, label: str, number: int, author: str) -> dict[str, Any]:
    return _retrying(db, _set_label, name, label, number, author)


def _set_label(conn: Connection, name: str, label: str, number: int, author: str) -> dict[str, Any]:
    now = now_us()
    product = lookup_product(conn, name, now)
    find_version(conn, product, str(number), now)  # 404 unless visible now
    moved = _move_label(conn, product, label, number, author, now)
    return {"label": label, "version": number, "moved_at": iso(moved)}


def delete_label(db: Database, name: str, label: str, author: str) -> None:
    _retrying(db, _delete_label, name, label, author)


def _delete_label(conn: Connection, name: str, label: str, author: str) -> None:
    now = now_us()
    product = lookup_product(conn, name, now)
    if label not in labels_as_of(conn, [product.id], now).get(product.id, {}):
        raise NotFound(f"no label {product.pri}@{label}")
    _move_label(conn, product, label, None, author, now)
