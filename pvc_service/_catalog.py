"""Reading products, versions and labels as of a time (the JSON objects of docs/api.md)."""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Sequence
from typing import Any

from pvc_client import LATEST, format_time, from_micros, is_label
from sqlalchemy import Connection, Row, Select, select

from ._errors import Invalid, NotFound, ServiceError
from ._names import (
    Product,
    aliases_of,
    canonical_names,
    canonical_names_query,
    chunks,
    find_products,
    labels_as_of,
    latest_numbers,
    pairs_in,
)
from ._schema import dependencies, label_moves, product_names, products, version_origins, versions

__all__ = ["iso", "product_summary", "list_products", "visible_products_query", "canonical_page",
           "list_versions", "get_version", "get_versions",
           "find_version", "find_versions", "product_labels", "label_history", "dependency_rows", "dependency_refs",
           "version_workspaces"]

_NUMBER_RE = re.compile(r"[1-9][0-9]{0,9}")
_DAY_US = 86_400 * 1_000_000
_EPOCH_DAY = datetime.date(1970, 1, 1)
# the days datetime can spell (years 1..9999), relative to the epoch
_MIN_DAY = (datetime.date.min - _EPOCH_DAY).days
_MAX_DAY = (datetime.date.max - _EPOCH_DAY).days


def iso(us: int) -> str:
    """``format_time(from_micros(us))``, several times faster: graphs format a time per version."""
    days, rest = divmod(us, _DAY_US)
    if not _MIN_DAY <= days <= _MAX_DAY:
        return format_time(from_micros(us))
    seconds, micros = divmod(rest, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day_prefix(days)}{hours:02d}:{minutes:02d}:{seconds:02d}.{micros:06d}Z"


@functools.lru_cache(maxsize=8192)
def _day_prefix(days: int) -> str:
    d = _EPOCH_DAY + datetime.timedelta(days=days)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"


def _product_summaries(conn: Connection, found: list[tuple[int, str, int, int]],
                       as_of: int) -> list[dict[str, Any]]:
    """The ProductSummary of each (product id, canonical name, began_us, created_us), in order.

    One builder for ``GET /products/{pri}`` and a page of ``GET /products``, so
    that the two answers cannot drift apart.
    """
    ids = [pid for pid, _, _, _ in found]
    aliases = aliases_of(conn, ids, as_of, {pid: (name, began) for pid, name, began, _ in found})
    latest = latest_numbers(conn, ids, as_of)
    return [
        {"pri": name, "product_id": pid, "aliases": aliases.get(pid, []),
         "created_at": iso(created), "latest": latest.get(pid)}
        for pid, name, _, created in found
    ]


def product_summary(conn: Connection, product: Product, as_of: int) -> dict[str, Any]:
    found = [(product.id, product.pri, product.began_us, product.created_us)]
    return _product_summaries(conn, found, as_of)[0]


def visible_products_query(as_of: int, prefix: str = "") -> tuple[Select, Any]:
    """(product_id, name, began_us, created_us) of every product visible at ``as_of``; and the names table."""
    names = canonical_names_query(as_of).subquery()
    query = (
        select(names.c.product_id, names.c.name, names.c.began_us, products.c.created_us)
        .join(products, products.c.id == names.c.product_id)
        .where(products.c.created_us <= as_of)
    )
    if prefix:
        query = query.where(names.c.name.startswith(prefix, autoescape=True))
    return query, names


def canonical_page(conn: Connection, as_of: int, prefix: str = "", after: str | None = None,
                   limit: int | None = None) -> tuple[list[tuple[int, str, int, int]], str | None]:
    """A page of the products visible at ``as_of``, by canonical name: (product_id, name,
    began_us, created_us) of the first ``limit`` whose name starts with ``prefix`` and sorts
    after ``after``; and the name to page on from (None: this is the last page).

    The names are walked in the order of their index from ``after`` (or the
    prefix), each kept only when it is its product's newest name as of
    ``as_of``; so a page reads about as many names as it answers (plus the
    aliases among them), whatever the size of the store. Names compare as
    bytes (code points) on both databases: on PostgreSQL through ``COLLATE
    "C"`` and its index (``ix_product_names_name_c``), whatever the
    database's own collation, so that a page's order is the answer's order.
    """
    name = _binary(conn, product_names.c.name)
    newer = product_names.alias("newer")
    # the product's newest name as of the time, looked up for each name the
    # page walks: a correlated LIMIT 1 that no planner turns into a join over
    # every name (PostgreSQL hashes a NOT EXISTS over the whole table when it
    # expects a prefix's range to be large)
    current = (select(newer.c.id)
               .where(newer.c.product_id == product_names.c.product_id, newer.c.began_us <= as_of)
               .order_by(newer.c.began_us.desc(), newer.c.id.desc()).limit(1).scalar_subquery())
    query = (
        select(product_names.c.product_id, product_names.c.name, product_names.c.began_us, products.c.created_us)
        .join(products, products.c.id == product_names.c.product_id)
        .where(product_names.c.began_us <= as_of, products.c.created_us <= as_of, product_names.c.id == current)
        .order_by(name)
    )
    if prefix:
        if not (prefix.isascii() and prefix.isprintable()):
            return [], None  # names are printable ASCII: nothing can start so
        # a range the index can seek to (LIKE alone is a scan on SQLite, and
        # case-blind there): every name that starts with the prefix is in it
        query = query.where(name >= prefix, name < _prefix_end(prefix))
    if after:
        query = query.where(name > after)
    if limit is not None:
        query = query.limit(limit + 1)  # one more: whether a next page exists
    rows = [(r.product_id, r.name, r.began_us, r.created_us) for r in conn.execute(query).all()]
    if limit is not None and len(rows) > limit:
        del rows[limit:]
        return rows, rows[-1][1]
    return rows, None


def _binary(conn: Connection, column: Any) -> Any:
    """``column`` compared as bytes: SQLite's default already; PostgreSQL's only with ``"C"``."""
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def _prefix_end(prefix: str) -> str:
    """The least string above every string that starts with an ASCII ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def list_products(conn: Connection, as_of: int, prefix: str, after: str | None,
                  limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """A page of ``GET /products`` and the ``after`` of the next one (None: the last page)."""
    rows, following = canonical_page(conn, as_of, prefix, after, limit)
    return _product_summaries(conn, rows, as_of), following


def dependency_rows() -> Select[tuple[int, int, int]]:
    """(version_id, dep_product_id, dep_number) of dependency rows, each version's in the order published."""
    return (select(dependencies.c.version_id, dependencies.c.dep_product_id, dependencies.c.dep_number)
            .order_by(dependencies.c.version_id, dependencies.c.position))


def dependency_refs(conn: Connection, version_ids: list[int], as_of: int) -> dict[int, list[str]]:
    """version id -> its dependencies spelled ``PRI@N`` with names as of a time."""
    raw: dict[int, list[tuple[int, int]]] = {}
    for batch in chunks(version_ids):
        rows = conn.execute(dependency_rows().where(dependencies.c.version_id.in_(batch)))
        for r in rows:
            raw.setdefault(r.version_id, []).append((r.dep_product_id, r.dep_number))
    names = canonical_names(conn, {pid for deps in raw.values() for pid, _ in deps}, as_of)
    return {vid: [f"{names[pid][0]}@{n}" for pid, n in deps] for vid, deps in raw.items()}


def version_workspaces(conn: Connection, version_ids: list[int]) -> dict[int, dict[str, Any]]:
    """version id -> ``{"name", "revision"}`` of the workspace it was published from (if it named one)."""
    out: dict[int, dict[str, Any]] = {}
    for batch in chunks(version_ids):
        rows = conn.execute(select(version_origins).where(version_origins.c.version_id.in_(batch)))
        for r in rows:
            out[r.version_id] = {"name": r.workspace, "revision": r.revision}
    return out


def _summary(product: Product, row: Row[Any], deps: list[str], workspace: dict[str, Any] | None) -> dict[str, Any]:
    return {"pri": product.pri, "product_id": product.id, "number": row.number,
            "ref": f"{product.pri}@{row.number}", "created_at": iso(row.created_us),
            "author": row.author, "message": row.message, "dependencies": deps, "workspace": workspace}


def list_versions(conn: Connection, product: Product, as_of: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(versions.c.id, versions.c.number, versions.c.created_us, versions.c.author,
               versions.c.message)
        .where(versions.c.product_id == product.id, versions.c.created_us <= as_of)
        .order_by(versions.c.number)
    ).all()
    ids = [r.id for r in rows]
    deps = dependency_refs(conn, ids, as_of)
    origins = version_workspaces(conn, ids)
    return [_summary(product, r, deps.get(r.id, []), origins.get(r.id)) for r in rows]


def find_version(conn: Connection, product: Product, selector: str, as_of: int) -> int:
    """The number a selector (``N``, a label or ``latest``) denotes as of a time."""
    found = find_versions(conn, [(product, selector)], as_of)[0]
    if isinstance(found, ServiceError):
        raise found
    return found


def find_versions(conn: Connection, wanted: Sequence[tuple[Product, str]],
                  as_of: int) -> list[int | ServiceError]:
    """`find_version` of each (product, selector), in order: the number, or the error it
    would raise. At most three queries per `CHUNK` products (latest, numbers, labels)."""
    latest = [p.id for p, sel in wanted if sel == LATEST]
    numbered = [(p.id, int(sel)) for p, sel in wanted if sel != LATEST and _NUMBER_RE.fullmatch(sel)]
    labelled = [p.id for p, sel in wanted if sel != LATEST and not _NUMBER_RE.fullmatch(sel) and is_label(sel)]
    newest = latest_numbers(conn, latest, as_of) if latest else {}
    exist: set[tuple[int, int]] = set()
    for batch in chunks(numbered):
        rows = conn.execute(select(versions.c.product_id, versions.c.number).where(
            pairs_in(versions.c.product_id, versions.c.number, batch), versions.c.created_us <= as_of))
        exist.update((pid, n) for pid, n in rows)
    labels = labels_as_of(conn, labelled, as_of) if labelled else {}
    out: list[int | ServiceError] = []
    for product, selector in wanted:
        if selector == LATEST:
            number = newest.get(product.id)
            out.append(NotFound(f"{product.pri} has no version as of {iso(as_of)}") if number is None
                       else int(number))
        elif _NUMBER_RE.fullmatch(selector):
            number = int(selector)
            out.append(number if (product.id, number) in exist
                       else NotFound(f"no version {product.pri}@{number} as of {iso(as_of)}"))
        elif not is_label(selector):
            out.append(Invalid(f"{selector!r}: a version is N (>= 1, no leading zeros), a label or 'latest'",
                               "invalid_pri"))
        elif selector in labels.get(product.id, {}):
            out.append(labels[product.id][selector])
        else:
            out.append(NotFound(f"no label {product.pri}@{selector} as of {iso(as_of)}"))
    return out


def _version_rows(conn: Connection, keys: Sequence[tuple[int, int]], as_of: int) -> dict[tuple[int, int], Row[Any]]:
    """(product id, number) -> its ``versions`` row, for those visible as of a time: one query per `CHUNK`."""
    found: dict[tuple[int, int], Row[Any]] = {}
    for batch in chunks(dict.fromkeys(keys)):
        rows = conn.execute(select(versions).where(
            pairs_in(versions.c.product_id, versions.c.number, batch), versions.c.created_us <= as_of))
        found.update({(r.product_id, r.number): r for r in rows})
    return found


def _versions(conn: Connection, found: Sequence[tuple[Product, Row[Any]]], as_of: int) -> list[dict[str, Any]]:
    """The Version of each (product, ``versions`` row), in order.

    One builder for ``GET /products/{pri}/versions/{sel}`` and ``POST
    /versions/batch``, so that the two answers cannot drift apart; its
    queries are per `CHUNK` versions, not per version.
    """
    ids = list(dict.fromkeys(row.id for _, row in found))
    deps = dependency_refs(conn, ids, as_of)
    origins = version_workspaces(conn, ids)
    labels = labels_as_of(conn, dict.fromkeys(product.id for product, _ in found), as_of)
    out = []
    for product, row in found:
        version = _summary(product, row, deps.get(row.id, []), origins.get(row.id))
        version["manifest"] = row.manifest
        version["labels"] = sorted(name for name, n in labels.get(product.id, {}).items() if n == row.number)
        out.append(version)
    return out


def get_version(conn: Connection, product: Product, number: int, as_of: int) -> dict[str, Any]:
    row = _version_rows(conn, [(product.id, number)], as_of).get((product.id, number))
    if row is None:
        raise NotFound(f"no version {product.pri}@{number} as of {iso(as_of)}")
    return _versions(conn, [(product, row)], as_of)[0]


# how many unknown refs a 404 of ``POST /versions/batch`` names
_MISSING_NAMED = 10


def get_versions(conn: Connection, refs: Sequence[tuple[str, int]], as_of: int,
                 omit: bool = False) -> list[dict[str, Any] | None]:
    """The Version of each (name, number), in order, as `get_version` answers it.

    An unknown product or version is a 404 naming the first few unknown
    refs, or with ``omit`` a None in its place. A constant number of queries
    per `CHUNK` refs, whatever their number.
    """
    products = find_products(conn, (name for name, _ in refs), as_of)
    rows = _version_rows(conn, [(products[name].id, n) for name, n in refs if name in products], as_of)
    found: list[tuple[Product, Row[Any]] | None] = []
    missing: list[str] = []
    for name, number in refs:
        product = products.get(name)
        row = rows.get((product.id, number)) if product is not None else None
        found.append(None if product is None or row is None else (product, row))
        if product is None:
            missing.append(f"no product {name!r}")
        elif row is None:
            missing.append(f"no version {product.pri}@{number}")
    if missing and not omit:
        more = len(missing) - _MISSING_NAMED
        raise NotFound(f"{len(missing)} of {len(refs)} versions unknown as of {iso(as_of)}: "
                       + "; ".join(missing[:_MISSING_NAMED]) + (f"; and {more} more" if more > 0 else ""))
    built = iter(_versions(conn, [pair for pair in found if pair is not None], as_of))
    return [None if pair is None else next(built) for pair in found]


def product_labels(conn: Connection, product: Product, as_of: int) -> dict[str, int]:
    return labels_as_of(conn, [product.id], as_of).get(product.id, {})


def label_history(conn: Connection, product: Product, label: str, as_of: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(label_moves.c.number, label_moves.c.moved_us, label_moves.c.author)
        .where(label_moves.c.product_id == product.id, label_moves.c.label == label,
               label_moves.c.moved_us <= as_of)
        .order_by(label_moves.c.moved_us, label_moves.c.id)
    ).all()
    if not rows:
        raise NotFound(f"no label {product.pri}@{label} as of {iso(as_of)}")
    return [{"version": r.number, "moved_at": iso(r.moved_us), "author": r.author} for r in rows]

