"""The Graph answers (``/index`` and ``/closure``): products with their versions,
dependencies, labels and aliases, in a fixed number of set-based queries per
batch of product ids, never one query per product; and pages of them.

A page of ``/index`` is a range of canonical names (`canonical_page`, the
index on names); a page of ``/closure`` is a range of product ids of the
closure, which is found whole (one recursive query per batch of roots) on
every page, since which products it holds is only known once it is walked.
"""

from __future__ import annotations

from typing import Any

from pvc_client import LATEST, Ref
from sqlalchemy import BindParameter, Connection, Select, literal, select

from ._catalog import canonical_page, dependency_rows, find_versions, iso, visible_products_query
from ._errors import ServiceError
from ._events import current_cursor
from ._names import (
    Prepared,
    aliases_of,
    batches,
    canonical_names,
    chunks,
    find_products,
    labels_as_of,
    no_product,
    where_in,
)
from ._schema import dependencies, products, versions

__all__ = ["index_graph", "closure_graph"]


def index_graph(conn: Connection, as_of: int, prefix: str = "", after: str | None = None,
                limit: int | None = None) -> dict[str, Any]:
    """Every product visible at ``as_of`` (whose name starts with ``prefix``), or
    the page of at most ``limit`` of them whose names sort after ``after``."""
    cursor = current_cursor(conn)
    if prefix or after or limit is not None:
        rows, following = canonical_page(conn, as_of, prefix, after, limit)
        found = {pid: (name, began, created) for pid, name, began, created in rows}
        graph = _graph(conn, as_of, cursor, found, sorted(found))
    else:
        # the whole store: one query per table, no id lists at all
        query, _ = visible_products_query(as_of)
        # .all(): one fetch for the whole answer, not a driver call per row
        found = {pid: (name, began, created) for pid, name, began, created in conn.execute(query).all()}
        graph = _graph(conn, as_of, cursor, found, None)
        following = None
    graph["next"] = following
    return graph


def closure_graph(conn: Connection, as_of: int, roots: list[tuple[str, Ref]], depth: int | None = None,
                  omit_missing: bool = False, after: int | None = None,
                  limit: int | None = None) -> dict[str, Any]:
    """The graph of everything reachable from the roots, through any visible version.

    ``depth`` bounds the levels followed (0: the roots alone: what a mount
    asks when it first meets a name). With ``omit_missing`` an unknown root,
    or a version of it that does not exist, is answered with a null ``pri``
    or ``number`` instead of a 404: one answer for a batch of names. A page
    holds the ``limit`` products of the closure with the lowest ids above
    ``after``; ``next`` is the ``after`` of the next page (None: the last).
    """
    cursor = current_cursor(conn)
    resolved, known = _resolve_roots(conn, roots, as_of, omit_missing)
    ids = sorted(_reachable(conn, sorted(known), as_of, depth))
    if after is not None:
        ids = [pid for pid in ids if pid > after]
    following = None
    if limit is not None and len(ids) > limit:
        ids = ids[:limit]
        following = ids[-1]
    found = {pid: known[pid] for pid in ids if pid in known}
    for batch in chunks(pid for pid in ids if pid not in known):
        rows = conn.execute(select(products.c.id, products.c.created_us).where(products.c.id.in_(batch)))
        created = {r.id: r.created_us for r in rows}
        for pid, (name, began) in canonical_names(conn, batch, as_of).items():
            found[pid] = (name, began, created[pid])
    graph = _graph(conn, as_of, cursor, found, ids)
    graph["roots"] = resolved
    graph["next"] = following
    return graph


def _resolve_roots(conn: Connection, roots: list[tuple[str, Ref]], as_of: int,
                   omit_missing: bool) -> tuple[list[dict[str, Any]], dict[int, tuple[str, int, int]]]:
    """Each root's ``{"ref", "pri", "number"}``, and (name, began_us, created_us) of the
    roots' products by id: in a few queries for all of them, not a few per root.

    The first root that fails, in the order given, decides the error, as if
    they were looked up one by one; with ``omit_missing`` a missing product
    or version is a null instead, but a malformed selector is still refused.
    """
    found = find_products(conn, (ref.pri.text for _, ref in roots), as_of)
    wanted = [(found[ref.pri.text], ref.selector or LATEST) for _, ref in roots if ref.pri.text in found]
    numbers = iter(find_versions(conn, wanted, as_of))
    resolved: list[dict[str, Any]] = []
    known: dict[int, tuple[str, int, int]] = {}
    for text, ref in roots:
        product = found.get(ref.pri.text)
        if product is None:
            if not omit_missing:
                raise no_product(ref.pri.text, as_of)
            resolved.append({"ref": text, "pri": None, "number": None})
            continue
        number = next(numbers)
        if isinstance(number, ServiceError):
            if not omit_missing or number.code != "not_found":
                raise number
            number = None
        resolved.append({"ref": text, "pri": product.pri, "number": number})
        # the roots' names and times are known now: not asked again for the graph
        known[product.id] = (product.pri, product.began_us, product.created_us)
    return resolved, known


def _reachable(conn: Connection, roots: list[int], as_of: int, depth: int | None) -> set[int]:
    """The products reachable from ``roots`` within ``depth`` levels (None: any), roots included.

    One recursive query per batch of roots, so that a closure costs the same
    few statements however deep it is. Without a depth each product is
    walked once (``UNION`` drops what was already reached); with one, a
    product is walked at most once per level.
    """
    reached = set(roots)
    if depth == 0:
        return reached
    for batch in chunks(roots):
        if depth is None:
            reach = select(products.c.id.label("pid")).where(products.c.id.in_(batch)).cte("reach", recursive=True)
            columns: list[Any] = [dependencies.c.dep_product_id]
            bound: list[Any] = []
        else:
            reach = (select(products.c.id.label("pid"), literal(0).label("level"))
                     .where(products.c.id.in_(batch)).cte("reach", recursive=True))
            columns, bound = [dependencies.c.dep_product_id, reach.c.level + 1], [reach.c.level < depth]
        joined = (dependencies.join(versions, versions.c.id == dependencies.c.version_id)
                  .join(reach, versions.c.product_id == reach.c.pid))
        reach = reach.union(select(*columns).select_from(joined).where(versions.c.created_us <= as_of, *bound))
        reached.update(conn.execute(select(reach.c.pid).distinct()).scalars())
    return reached


def _graph(conn: Connection, as_of: int, cursor: int, found: dict[int, tuple[str, int, int]],
           ids: list[int] | None) -> dict[str, Any]:
    canonical = {pid: (name, began) for pid, (name, began, _) in found.items()}
    aliases = aliases_of(conn, ids, as_of, canonical)
    labels = labels_as_of(conn, ids, as_of)

    per_product: dict[int, list[dict[str, Any]]] = {pid: [] for pid in found}
    by_version: dict[int, dict[str, Any]] = {}
    for batch in batches(ids):
        # unpacked rows: this loop runs once per version of the whole store
        for vid, pid, number, created in _versions(conn, as_of, batch).all():
            if pid not in per_product:
                continue
            entry = {"number": number, "created_at": iso(created), "dependencies": []}
            per_product[pid].append(entry)
            by_version[vid] = entry

    raw_deps: list[tuple[dict[str, Any], int, int]] = []
    for batch in batches(ids):
        for vid, dep_pid, dep_number in _dependencies(conn, as_of, batch).all():
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


def _visible(query: Select[Any], as_of: BindParameter[Any], batch: BindParameter[Any] | None) -> Select[Any]:
    """``query``, which reads ``versions``, limited to the versions of ``batch`` visible at ``as_of``."""
    return where_in(query.where(versions.c.created_us <= as_of), versions.c.product_id, batch)


_versions = Prepared(lambda as_of, ids: _visible(
    select(versions.c.id, versions.c.product_id, versions.c.number, versions.c.created_us), as_of, ids)
    .order_by(versions.c.product_id, versions.c.number))
_dependencies = Prepared(lambda as_of, ids: _visible(
    dependency_rows().join(versions, versions.c.id == dependencies.c.version_id), as_of, ids))
