"""The Graph answers (``/index`` and ``/closure``): every visible product with its
versions, dependencies, labels and aliases, in a fixed number of set-based
queries (batched by product id for a closure), never one query per product.
"""

from __future__ import annotations

from typing import Any

from pvc_client import LATEST, Ref
from sqlalchemy import Connection, Select, select

from ._catalog import dependency_rows, find_version, iso, visible_products_query
from ._errors import ServiceError
from ._events import current_cursor
from ._names import (
    aliases_of,
    batches,
    canonical_names,
    chunks,
    labels_as_of,
    lookup_product,
    where_in,
)
from ._schema import dependencies, products, versions

__all__ = ["index_graph", "closure_graph"]


def index_graph(conn: Connection, as_of: int, prefix: str = "") -> dict[str, Any]:
    cursor = current_cursor(conn)
    query, _ = visible_products_query(as_of, prefix)
    # .all(): one fetch for the whole answer, not a driver call per row
    found = {pid: (name, began, created) for pid, name, began, created in conn.execute(query).all()}
    # without a prefix every visible product is wanted: no id lists at all
    ids = sorted(found) if prefix else None
    return _graph(conn, as_of, cursor, found, ids)


def closure_graph(conn: Connection, as_of: int, roots: list[tuple[str, Ref]], depth: int | None = None,
                  omit_missing: bool = False) -> dict[str, Any]:
    """The graph of everything reachable from the roots, through any visible version.

    ``depth`` bounds the levels followed (0: the roots alone: what a mount
    asks when it first meets a name). With ``omit_missing`` an unknown root,
    or a version of it that does not exist, is answered with a null ``pri``
    or ``number`` instead of a 404: one answer for a batch of names.
    """
    cursor = current_cursor(conn)
    resolved = []
    seen: set[int] = set()
    for text, ref in roots:
        try:
            product = lookup_product(conn, ref.pri.text, as_of)
        except ServiceError as exc:
            if not omit_missing or exc.code != "not_found":
                raise
            resolved.append({"ref": text, "pri": None, "number": None})
            continue
        try:
            number: int | None = find_version(conn, product, ref.selector or LATEST, as_of)
        except ServiceError as exc:
            if not omit_missing or exc.code != "not_found":
                raise
            number = None
        resolved.append({"ref": text, "pri": product.pri, "number": number})
        seen.add(product.id)
    frontier = sorted(seen)
    level = 0
    while frontier and (depth is None or level < depth):  # breadth first, one query per batch per level
        level += 1
        reached: set[int] = set()
        for batch in chunks(frontier):
            reached.update(conn.execute(
                select(dependencies.c.dep_product_id).distinct()
                .join(versions, versions.c.id == dependencies.c.version_id)
                .where(versions.c.product_id.in_(batch), versions.c.created_us <= as_of)
            ).scalars())
        frontier = sorted(reached - seen)
        seen.update(frontier)
    ids = sorted(seen)
    found: dict[int, tuple[str, int, int]] = {}
    for batch in chunks(ids):
        rows = conn.execute(select(products.c.id, products.c.created_us).where(products.c.id.in_(batch)))
        created = {r.id: r.created_us for r in rows}
        for pid, (name, began) in canonical_names(conn, batch, as_of).items():
            found[pid] = (name, began, created[pid])
    graph = _graph(conn, as_of, cursor, found, ids)
    graph["roots"] = resolved
    return graph


def _graph(conn: Connection, as_of: int, cursor: int, found: dict[int, tuple[str, int, int]],
           ids: list[int] | None) -> dict[str, Any]:
    canonical = {pid: (name, began) for pid, (name, began, _) in found.items()}
    aliases = aliases_of(conn, ids, as_of, canonical)
    labels = labels_as_of(conn, ids, as_of)

    per_product: dict[int, list[dict[str, Any]]] = {pid: [] for pid in found}
    by_version: dict[int, dict[str, Any]] = {}
    for batch in batches(ids):
        query = _visible(select(versions.c.id, versions.c.product_id, versions.c.number, versions.c.created_us),
                         as_of, batch)
        # unpacked rows: this loop runs once per version of the whole store
        rows = conn.execute(query.order_by(versions.c.product_id, versions.c.number)).all()
        for vid, pid, number, created in rows:
            if pid not in per_product:
                continue
            entry = {"number": number, "created_at": iso(created), "dependencies": []}
            per_product[pid].append(entry)
            by_version[vid] = entry

    raw_deps: list[tuple[dict[str, Any], int, int]] = []
    for batch in batches(ids):
        query = dependency_rows().join(versions, versions.c.id == dependencies.c.version_id)
        rows = conn.execute(_visible(query, as_of, batch)).all()
        for vid, dep_pid, dep_number in rows:
            entry = by_version.get(vid)
            if entry is not None:
                raw_deps.append((entry, dep_pid, dep_number))
    # dependencies outside the answered set (a prefixed index) still need names
    outside = {pid for _, pid, _ in raw_deps if pid not in canonical}
    names = {pid: name for pid, (name, _) in canonical.items()}
    names.update({pid: name for pid, (name, _) in canonical_names(conn, outside, as_of).items()})
    for entry, pid, number in raw_deps:
        entry["dependencies"].append(f"{names[pid]}@{number}")

    out = {}
    for pid in sorted(found, key=lambda p: found[p][0]):
        name, _, created = found[pid]
        out[name] = {"product_id": pid, "aliases": aliases.get(pid, []), "created_at": iso(created),
                     "versions": per_product[pid], "labels": labels.get(pid, {})}
    return {"as_of": iso(as_of), "cursor": cursor, "products": out}


def _visible(query: Select[Any], as_of: int, batch: list[int] | None) -> Select[Any]:
    """``query``, which reads ``versions``, limited to the versions of ``batch`` visible at ``as_of``."""
    return where_in(query.where(versions.c.created_us <= as_of), versions.c.product_id, batch)
