"""Product names as of a time: lookup, canonical names, aliases, visibility.

A product is visible as of T when its first version was created at or before
T. A name resolves as of T when it had begun by T; the canonical name is the
newest such name. All helpers take a set of product ids (or None for all) and
answer in a few set-based queries, so they serve one product and 100k alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from pvc_client import PVCError, format_time, from_micros, parse_time, to_micros, utcnow
from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Connection,
    CursorResult,
    Select,
    String,
    and_,
    bindparam,
    func,
    select,
    tuple_,
)

from ._errors import NotFound, from_client_error
from ._schema import label_moves, product_names, products, versions

__all__ = ["now_us", "parse_as_of", "chunks", "batches", "where_in", "pairs_in", "AS_OF", "IDS", "Prepared",
           "find_products", "find_product",
           "lookup_product", "no_product",
           "canonical_names_query", "canonical_names", "aliases_of", "latest_numbers", "labels_as_of",
           "Product", "product_by_id"]

T = TypeVar("T")
S = TypeVar("S", bound=Select[Any])

# Bound parameters per IN (...) list: well under SQLite's and PostgreSQL's limits.
CHUNK = 900


def now_us() -> int:
    return to_micros(utcnow())


def parse_as_of(text: str | None, now: int) -> int:
    if text is None or text == "":
        return now
    try:
        return to_micros(parse_time(text))
    except PVCError as error:
        raise from_client_error(error) from None


def chunks(ids: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for i in ids:
        batch.append(i)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def batches(ids: Iterable[int] | None) -> Iterable[list[int] | None]:
    """The batches to ask about ``ids`` in: `chunks`, or for None (every product)
    one None batch, which `where_in` leaves unlimited.

    Asking for every product without an id list keeps a whole-store answer
    (``/index``) to one query per table, not one per ``CHUNK`` products.
    """
    return [None] if ids is None else chunks(ids)


def where_in(query: S, column: ColumnElement[Any], batch: Sequence[int] | BindParameter[Any] | None) -> S:
    """``query`` limited to rows whose ``column`` is in ``batch`` (ids, or `IDS`); a None batch limits nothing."""
    return query if batch is None else query.where(column.in_(batch))


def pairs_in(first: ColumnElement[Any], second: ColumnElement[Any],
             pairs: Sequence[tuple[Any, Any]]) -> ColumnElement[bool]:
    """``(first, second)`` is one of ``pairs``, spelled so that an index on (first, second) is used.

    SQLite seeks no index with a list of row values alone (it scans the
    table, manifests and all); the list of ``first`` values it does seek,
    and the pairs then sort out the index entries before any row is read.
    """
    return and_(first.in_(sorted({a for a, _ in pairs})), tuple_(first, second).in_(pairs))


# The values of a `Prepared` statement: the time, and a batch of product ids.
AS_OF = bindparam("as_of", type_=BigInteger)
IDS = bindparam("ids", type_=BigInteger, expanding=True)


class Prepared:
    """A statement ``build(as_of, ids)`` built once per shape and run with its values.

    Building a Core statement costs several times what running it costs on
    the few rows of a lookup (about 160 us against 40 on SQLite), and a
    mount's first lookup of a name runs ten of them: so the helpers that
    every request uses build theirs once, with `AS_OF` and `IDS` in place of
    the values. A None batch is the shape without an id list (every product).
    """

    __slots__ = ("build", "shapes")

    def __init__(self, build: Callable[[BindParameter[Any], BindParameter[Any] | None], Select[Any]]) -> None:
        self.build = build
        self.shapes: dict[bool, Select[Any]] = {}

    def __call__(self, conn: Connection, as_of: int, batch: Sequence[int] | None) -> CursorResult[Any]:
        whole = batch is None
        statement = self.shapes.get(whole)
        if statement is None:  # two threads may both build it: the same statement either way
            statement = self.shapes[whole] = self.build(AS_OF, None if whole else IDS)
        return conn.execute(statement, {"as_of": as_of} if whole else {"as_of": as_of, "ids": list(batch or ())})


class Product:
    """A product found by name as of a time."""

    __slots__ = ("id", "pri", "created_us", "began_us")

    def __init__(self, id: int, pri: str, created_us: int, began_us: int) -> None:
        self.id = id
        self.pri = pri  # the canonical name as of the lookup time
        self.created_us = created_us
        self.began_us = began_us  # when that canonical name began


_BY_NAME = (
    select(product_names.c.name, products.c.id, products.c.created_us)
    .join(product_names, product_names.c.product_id == products.c.id)
    .where(product_names.c.name.in_(bindparam("names", type_=String, expanding=True)),
           product_names.c.began_us <= AS_OF, products.c.created_us <= AS_OF)
)


def find_products(conn: Connection, names: Iterable[str], as_of: int) -> dict[str, Product]:
    """name -> the product it (canonical or alias) denotes as of a time, for the names that
    denote one: two queries per `CHUNK` names, however many there are."""
    found: dict[str, tuple[int, int]] = {}
    for batch in chunks(dict.fromkeys(names)):
        rows = conn.execute(_BY_NAME, {"names": batch, "as_of": as_of}).all()
        found.update({name: (pid, created) for name, pid, created in rows})
    current = canonical_names(conn, {pid for pid, _ in found.values()}, as_of)
    return {name: Product(pid, current[pid][0], created, current[pid][1])
            for name, (pid, created) in found.items()}


def find_product(conn: Connection, name: str, as_of: int) -> Product | None:
    """The product a name (canonical or alias) denotes as of a time, or None."""
    return find_products(conn, [name], as_of).get(name)


def no_product(name: str, as_of: int) -> NotFound:
    return NotFound(f"no product {name!r} as of {format_time(from_micros(as_of))}")


def lookup_product(conn: Connection, name: str, as_of: int) -> Product:
    """Like `find_product`, but an unknown name is a 404."""
    product = find_product(conn, name, as_of)
    if product is None:
        raise no_product(name, as_of)
    return product


def canonical_names_query(as_of: int | BindParameter[Any],
                          ids: Sequence[int] | BindParameter[Any] | None = None) -> Select[Any]:
    """(product_id, name, began_us) of each product's canonical name as of a time."""
    rank = func.row_number().over(
        partition_by=product_names.c.product_id,
        order_by=(product_names.c.began_us.desc(), product_names.c.id.desc()),
    ).label("rank")
    inner = select(product_names.c.product_id, product_names.c.name, product_names.c.began_us, rank)
    inner = inner.where(product_names.c.began_us <= as_of)
    sub = where_in(inner, product_names.c.product_id, ids).subquery()
    return select(sub.c.product_id, sub.c.name, sub.c.began_us).where(sub.c.rank == 1)


_canonical = Prepared(canonical_names_query)


def canonical_names(conn: Connection, ids: Iterable[int] | None, as_of: int) -> dict[int, tuple[str, int]]:
    """product id -> (canonical name, began_us) as of a time."""
    out: dict[int, tuple[str, int]] = {}
    for batch in batches(ids):
        for pid, name, began in _canonical(conn, as_of, batch).all():
            out[pid] = (name, began)
    return out


_names_of = Prepared(lambda as_of, ids: where_in(
    select(product_names.c.product_id, product_names.c.name).where(product_names.c.began_us <= as_of),
    product_names.c.product_id, ids))


def aliases_of(conn: Connection, ids: Iterable[int] | None, as_of: int,
               canonical: dict[int, tuple[str, int]]) -> dict[int, list[str]]:
    """product id -> older names that existed as of a time, sorted."""
    out: dict[int, list[str]] = {}
    for batch in batches(ids):
        for pid, name in _names_of(conn, as_of, batch).all():
            current = canonical.get(pid)
            if current is not None and name != current[0]:
                out.setdefault(pid, []).append(name)
    for names in out.values():
        names.sort()
    return out


_latest = Prepared(lambda as_of, ids: where_in(
    select(versions.c.product_id, func.max(versions.c.number)).where(versions.c.created_us <= as_of),
    versions.c.product_id, ids).group_by(versions.c.product_id))


def latest_numbers(conn: Connection, ids: Iterable[int], as_of: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for batch in chunks(ids):
        out.update({pid: number for pid, number in _latest(conn, as_of, batch)})
    return out


def _labels_query(as_of: BindParameter[Any], ids: BindParameter[Any] | None) -> Select[Any]:
    rank = func.row_number().over(
        partition_by=(label_moves.c.product_id, label_moves.c.label),
        order_by=(label_moves.c.moved_us.desc(), label_moves.c.id.desc()),
    ).label("rank")
    inner = select(label_moves.c.product_id, label_moves.c.label, label_moves.c.number, rank).where(
        label_moves.c.moved_us <= as_of)
    sub = where_in(inner, label_moves.c.product_id, ids).subquery()
    return (select(sub.c.product_id, sub.c.label, sub.c.number)
            .where(sub.c.rank == 1, sub.c.number.is_not(None))
            .order_by(sub.c.product_id, sub.c.label))


_labels = Prepared(_labels_query)


def labels_as_of(conn: Connection, ids: Iterable[int] | None, as_of: int) -> dict[int, dict[str, int]]:
    """product id -> {label: number} as of a time (deleted labels left out)."""
    out: dict[int, dict[str, int]] = {}
    for batch in batches(ids):
        for pid, label, number in _labels(conn, as_of, batch).all():  # sorted: each product's labels in order
            out.setdefault(pid, {})[label] = number
    return out


def product_by_id(conn: Connection, product_id: int, as_of: int) -> Product:
    """A product known by id, named as of a time (a time at which it is visible)."""
    created = conn.execute(select(products.c.created_us).where(products.c.id == product_id)).scalar_one()
    name, began = canonical_names(conn, [product_id], max(as_of, created))[product_id]
    return Product(product_id, name, created, began)
