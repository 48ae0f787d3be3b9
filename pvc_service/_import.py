"""Bulk import of a JSON-lines history straight into the service's database.

One line is one publish (docs/pvc-cli.md, "pvc import"): the same rules are
checked as for ``POST /products/{pri}/versions`` and the same rows are written
(products, product_names, versions, version_origins, dependencies,
label_moves, events), so an imported store answers exactly like the same
history published line by line
(except for the feed events' ``time``, which is the import's time, as a
publish's event is dated when it is made).

The whole import is ONE write transaction (the service's write lock is held
throughout): rows are sent in large ``executemany`` batches as the file is
read, and a refused line rolls back everything written before it. Other
writers (a running service's publishes) wait for the lock; readers go on
seeing the store as it was until the commit.

Run as ``python -m pvc_service._import FILE --data DIR [--db URL]
[--allow-missing-blobs]`` or, installed, as ``pvc import`` (entry point
``import`` of the group ``pvc.plugins``).
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, exc, func, select, text

from pvc_client import (
    LATEST,
    PVCError,
    parse_pri,
    parse_ref,
    parse_time,
    to_micros,
    validate_manifest,
)
from pvc_client.progress import transfer_progress

from ._catalog import find_version, iso
from ._db import Database, SchemaError, normalize_db_url
from ._errors import ServiceError
from ._names import Product, chunks, find_product, now_us, product_by_id
from ._publish import settable_label
from ._schema import (
    ALL_TABLES,
    blobs,
    dependencies,
    events,
    label_moves,
    product_names,
    products,
    version_origins,
    versions,
)
from ._workspaces import check_name, check_origin

__all__ = ["FIELDS", "ImportRefused", "ImportReport", "import_history", "main"]

FIELDS = frozenset({"pri", "number", "created_at", "author", "message", "manifest", "dependencies", "labels",
                    "workspace"})
BATCH = 20_000  # versions per executemany batch
# the limits of a publish body (pvc_service._models.PublishBody)
_TEXT, _MESSAGE, _LIST, _LABELS = 256, 64 * 1024, 100_000, 1000
# foreign keys first
_TABLES = (products, product_names, versions, version_origins, dependencies, label_moves, events)
# the tables whose ids the import hands out (version_origins is keyed by its version's id)
_ID_TABLES = tuple(t for t in _TABLES if "id" in t.c)
_COLUMNS = {
    "products": ("id", "created_us"),
    "product_names": ("id", "product_id", "name", "began_us"),
    "versions": ("id", "product_id", "number", "created_us", "author", "message", "manifest"),
    "version_origins": ("version_id", "workspace", "revision"),
    "dependencies": ("id", "version_id", "position", "dep_product_id", "dep_number"),
    "label_moves": ("id", "product_id", "label", "number", "moved_us", "author"),
    "events": ("id", "time_us", "kind", "pri", "data"),
}
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # as CompactJSON stores it
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 7


class ImportRefused(Exception):
    """A line of the history is refused; nothing of the import is written."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(slots=True)
class ImportReport:
    lines: int = 0
    versions: int = 0
    new_products: int = 0
    dependencies: int = 0
    labels: int = 0
    events: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"imported {self.versions:,} versions ({self.new_products:,} new products, "
                f"{self.dependencies:,} dependencies, {self.labels:,} labels) in {self.seconds:.1f} s")


class _Product:
    """What the import knows of one product: its store part and the versions of this file."""

    __slots__ = ("created", "first_us", "id", "in_store", "moves", "name", "newest", "ref", "store_last")

    def __init__(self, id: int, name: str, first_us: int, *, store_last: int = 0, newest: int = 0,
                 in_store: bool = False) -> None:
        self.id = id
        self.name = name  # the canonical name now (what events and dependency names say)
        self.first_us = first_us  # created_us of the product (its first version)
        self.store_last = store_last  # versions 1..store_last are in the store already
        self.created: list[int] = []  # created_us of versions store_last+1, ... of this file
        self.newest = newest
        self.moves: dict[str, tuple[list[int], list[int]]] = {}  # label -> (times, numbers) of this file
        self.in_store = in_store
        self.ref = Product(id, name, first_us, first_us)

    @property
    def last(self) -> int:
        return self.store_last + len(self.created)


def _refuse(line: int, message: str) -> ImportRefused:
    return ImportRefused(line, message)


class _Importer:
    def __init__(self, conn: Connection, *, allow_missing_blobs: bool, batch: int) -> None:
        self.conn = conn
        self.allow_missing = allow_missing_blobs
        self.batch = batch
        self.now = now_us()
        self.by_name: dict[str, _Product] = {}
        self.by_id: dict[int, _Product] = {}
        # every name ever given in the store, at once: one query instead of one a line
        self.store_names: dict[str, int] = dict(conn.execute(select(product_names.c.name,
                                                                    product_names.c.product_id)).all())
        self.next_id = {t.name: self._max_id(t) + 1 for t in _ID_TABLES}
        self.rows: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in _TABLES}
        mark = "?" if conn.dialect.paramstyle in ("qmark", "numeric") else "%s"
        # plain executemany of tuples: SQLAlchemy's per-row parameter processing would cost
        # more than the database's work (JSON columns are encoded as CompactJSON would)
        self.sql = {name: f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
                    for name, cols in _COLUMNS.items()}
        self.written = {t.name: False for t in _TABLES}
        self.pending_versions = 0
        self.blobs_ok: dict[str, int] = {}  # sha256 -> size, checked against the store
        self.blobs_wanted: dict[tuple[str, int], tuple[int, str]] = {}  # (sha, size) -> (line, path)
        self.origins_ok: set[tuple[str, int]] = set()  # workspace revisions checked against the store
        self.report = ImportReport()

    def _max_id(self, table: Table) -> int:
        high = int(self.conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())
        if table is events and self.conn.dialect.name == "sqlite":
            # AUTOINCREMENT: never hand out an id that was ever used
            seq = self.conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = 'events'")).scalar()
            high = max(high, int(seq or 0))
        return high

    def _take_id(self, table: Table) -> int:
        value = self.next_id[table.name]
        self.next_id[table.name] = value + 1
        return value

    # -- products -------------------------------------------------------------------------

    def _load(self, pid: int) -> _Product:
        known = self.by_id.get(pid)
        if known is not None:
            return known
        newest, last = self.conn.execute(select(func.max(versions.c.created_us), func.max(versions.c.number))
                                         .where(versions.c.product_id == pid)).one()
        product = product_by_id(self.conn, pid, self.now)
        p = _Product(pid, product.pri, product.created_us, store_last=last or 0, newest=newest or 0,
                     in_store=True)
        self.by_id[pid] = p
        return p

    def _own_product(self, name: str) -> _Product | None:
        p = self.by_name.get(name)
        if p is None:
            # any name ever given: a publish to an alias goes to its product
            pid = self.store_names.get(name)
            if pid is not None:
                p = self.by_name[name] = self._load(int(pid))
        return p

    def _dependency_product(self, n: int, name: str, at: int) -> _Product:
        p = self.by_name.get(name)
        if p is not None and not p.in_store:
            if p.first_us > at:
                raise _refuse(n, f"dependency {name}: no product {name} as of {iso(at)}")
            return p
        found = find_product(self.conn, name, at)  # a store name, as of the version's time
        if found is None:
            raise _refuse(n, f"dependency {name}: no product {name} as of {iso(at)}")
        return self._load(found.id)

    def _dependency_number(self, n: int, ref_text: str, p: _Product, selector: str, at: int) -> int:
        if selector.isdigit():
            number = int(selector)
            if number > p.last:
                raise self._missing(n, ref_text, at)
            if number > p.store_last:
                if p.created[number - p.store_last - 1] > at:
                    raise self._missing(n, ref_text, at)
                return number
        elif selector == LATEST:
            k = bisect.bisect_right(p.created, at)
            if k:
                return p.store_last + k
        else:
            return self._label_number(n, ref_text, p, selector, at)
        if not p.in_store:
            raise self._missing(n, ref_text, at)
        try:
            return find_version(self.conn, p.ref, selector, at)
        except ServiceError as error:
            if error.code != "not_found":
                raise _refuse(n, f"dependency {ref_text}: {error.message}") from None
            raise self._missing(n, ref_text, at) from None

    def _label_number(self, n: int, ref_text: str, p: _Product, label: str, at: int) -> int:
        """The label's position as of ``at``: the newest move by time (then by id), of the store or the file."""
        ours: tuple[int, int] | None = None
        moves = p.moves.get(label)
        if moves is not None:
            k = bisect.bisect_right(moves[0], at)
            if k:
                ours = (moves[0][k - 1], moves[1][k - 1])
        if p.in_store:
            # a stored move (set by the API after a version of this file's time) can be newer
            row = self.conn.execute(
                select(label_moves.c.moved_us, label_moves.c.number)
                .where(label_moves.c.product_id == p.id, label_moves.c.label == label, label_moves.c.moved_us <= at)
                .order_by(label_moves.c.moved_us.desc(), label_moves.c.id.desc()).limit(1)).first()
            if row is not None and (ours is None or row.moved_us > ours[0]):
                ours = (row.moved_us, row.number)  # a number of None: the label was deleted
        if ours is None or ours[1] is None:
            raise self._missing(n, ref_text, at)
        return ours[1]

    @staticmethod
    def _missing(n: int, ref_text: str, at: int) -> ImportRefused:
        return _refuse(n, f"dependency {ref_text} does not exist as of {iso(at)}")

    # -- one line ---------------------------------------------------------------------------

    def line(self, n: int, raw: str | bytes) -> None:
        if not raw.strip():
            return
        try:
            obj = json.loads(raw)
        except ValueError as error:
            raise _refuse(n, f"not a JSON object: {error}") from None
        if not isinstance(obj, dict):
            raise _refuse(n, f"not a JSON object but {type(obj).__name__}")
        unknown = sorted(set(obj) - FIELDS)
        if unknown:
            raise _refuse(n, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(sorted(FIELDS))}")
        try:
            self._publish(n, obj)
        except PVCError as error:
            raise _refuse(n, str(error)) from None
        except ServiceError as error:  # a rule the API applies too (settable labels)
            raise _refuse(n, error.message) from None

    def _publish(self, n: int, obj: dict[str, Any]) -> None:
        if "pri" not in obj:
            raise _refuse(n, "no 'pri'")
        name = parse_pri(obj["pri"]).text
        author = _text(n, obj, "author", _TEXT).strip() or "anonymous"
        message = _text(n, obj, "message", _MESSAGE)
        manifest = obj.get("manifest", [])
        if not isinstance(manifest, list):
            raise _refuse(n, "'manifest' must be a list of entries")
        entries = validate_manifest(manifest)
        refs = _strings(n, obj, "dependencies", _LIST)
        labels = list(dict.fromkeys(settable_label(label) for label in _strings(n, obj, "labels", _LABELS)))
        origin = self._origin(n, obj.get("workspace"))

        p = self._own_product(name)
        last = 0 if p is None else p.last
        newest = None if p is None else p.newest
        number = obj.get("number")
        if number is not None and (type(number) is not int or number != last + 1):
            shown = f"{name}@{last}" if last else f"{name} has no version yet"
            raise _refuse(n, f"'number' {number!r}: versions are numbered 1, 2, ... without gaps, "
                             f"so the next is {last + 1} ({shown})")
        created = obj.get("created_at")
        if created is None:
            at = max(self.now, newest or 0)
        else:
            if not isinstance(created, str):
                raise _refuse(n, "'created_at' must be a time string")
            at = to_micros(parse_time(created))
            if at > self.now:
                raise _refuse(n, f"'created_at' {iso(at)} is in the future")
            if newest is not None and at < newest:
                raise _refuse(n, f"'created_at' {iso(at)} is earlier than the newest version of {name} "
                                 f"({iso(newest)})")

        deps: list[tuple[_Product, int]] = []
        for ref_text in refs:
            ref = parse_ref(ref_text)
            target = self._dependency_product(n, ref.pri.text, at)
            dep = (target, self._dependency_number(n, ref_text, target, ref.selector or LATEST, at))
            if all(d[0] is not dep[0] or d[1] != dep[1] for d in deps):
                deps.append(dep)
        self._want_blobs(n, entries)

        # checked: write
        if p is None:
            p = _Product(self._take_id(products), name, at)
            self.by_name[name] = self.by_id[p.id] = p
            self.rows["products"].append((p.id, at))
            self.rows["product_names"].append((self._take_id(product_names), p.id, name, at))
            self.report.new_products += 1
        number = p.last + 1
        p.created.append(at)
        p.newest = at
        version_id = self._take_id(versions)
        self.rows["versions"].append((version_id, p.id, number, at, author, message,
                                      _compact([e.to_json() for e in entries])))
        if origin is not None:
            self.rows["version_origins"].append((version_id, *origin))
        for position, (target, dep_number) in enumerate(deps):
            self.rows["dependencies"].append((self._take_id(dependencies), version_id, position, target.id,
                                              dep_number))
        self._event("publish", p.name, {"number": number, "created_at": iso(at),
                                        "dependencies": [f"{t.name}@{d}" for t, d in deps]})
        for label in labels:
            self.rows["label_moves"].append((self._take_id(label_moves), p.id, label, number, at, author))
            times, numbers = p.moves.setdefault(label, ([], []))
            times.append(at)
            numbers.append(number)
            self._event("label", p.name, {"label": label, "number": number})
        self.report.versions += 1
        self.report.dependencies += len(deps)
        self.report.labels += len(labels)
        self.pending_versions += 1
        if self.pending_versions >= self.batch:
            self.flush()

    def _origin(self, n: int, value: Any) -> tuple[str, int] | None:
        """A line's ``workspace`` ({"name", "revision"} as in a publish), checked against the store.

        An import creates no workspaces, so the revision must be stored
        already; each one is asked about once.
        """
        if value is None:
            return None
        if (not isinstance(value, dict) or set(value) != {"name", "revision"}
                or not isinstance(value["name"], str) or type(value["revision"]) is not int
                or not 1 <= value["revision"] <= 2**31 - 1):
            raise _refuse(n, "'workspace' must be {\"name\": NAME, \"revision\": N} (N >= 1)")
        origin = (check_name(value["name"]), value["revision"])
        if origin not in self.origins_ok:
            check_origin(self.conn, *origin)  # a ServiceError: refused with its message by `line`
            self.origins_ok.add(origin)
        return origin

    def _event(self, kind: str, pri: str, data: dict[str, Any]) -> None:
        self.rows["events"].append((self._take_id(events), self.now, kind, pri, _compact(data)))
        self.report.events += 1

    def _want_blobs(self, n: int, entries: list[Any]) -> None:
        sizes: dict[str, tuple[int, str]] = {}
        for e in entries:
            if e.type != "file":
                continue
            seen = sizes.setdefault(e.sha256, (e.size, e.path))
            if seen[0] != e.size:
                raise _refuse(n, f"{e.path!r} and {seen[1]!r} have the same sha256 but different sizes")
            if self.blobs_ok.get(e.sha256) != e.size:
                self.blobs_wanted.setdefault((e.sha256, e.size), (n, e.path))

    # -- writing ----------------------------------------------------------------------------

    def _check_blobs(self) -> None:
        wanted = self.blobs_wanted
        if not wanted:
            return
        stored: dict[str, int] = {}
        for batch in chunks(sorted({sha for sha, _ in wanted})):
            stored.update(self.conn.execute(select(blobs.c.sha256, blobs.c.size)
                                            .where(blobs.c.sha256.in_(batch))).all())
        problems: list[tuple[int, str]] = []
        for (sha, size), (n, path) in wanted.items():
            if sha not in stored:
                if not self.allow_missing:
                    problems.append((n, f"{path!r}: blob {sha} not uploaded (or give --allow-missing-blobs)"))
            elif stored[sha] != size:
                problems.append((n, f"{path!r}: size {size} but blob {sha} has {stored[sha]} bytes"))
            else:
                self.blobs_ok[sha] = size
        if problems:
            raise _refuse(*min(problems))
        wanted.clear()

    def flush(self) -> None:
        self._check_blobs()
        for table in _TABLES:
            rows = self.rows[table.name]
            if rows:
                self.conn.exec_driver_sql(self.sql[table.name], rows)
                self.written[table.name] = True
                rows.clear()
        self.pending_versions = 0

    def finish(self) -> ImportReport:
        self.flush()
        if self.conn.dialect.name == "postgresql":
            # ids were given explicitly: move the sequences past them
            for table in _ID_TABLES:
                if not self.written[table.name]:
                    continue
                self.conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                       f"(SELECT max(id) FROM {table.name}))"))
        return self.report


def _text(n: int, obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _refuse(n, f"{key!r} must be a string")
    if len(value) > limit:
        raise _refuse(n, f"{key!r} is longer than {limit} characters")
    return value


def _strings(n: int, obj: dict[str, Any], key: str, limit: int) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _refuse(n, f"{key!r} must be a list of strings")
    if len(value) > limit:
        raise _refuse(n, f"{key!r} has more than {limit} items")
    return value


def import_history(db: Database, lines: Iterable[str | bytes], *, allow_missing_blobs: bool = False,
                   batch: int = BATCH, progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import one publish per line, all in one write transaction; raises `ImportRefused` (nothing written)."""
    start = time.monotonic()
    with db.write() as conn:
        importer = _Importer(conn, allow_missing_blobs=allow_missing_blobs, batch=batch)
        n = 0
        for n, raw in enumerate(lines, 1):
            importer.line(n, raw)
            if progress is not None and n % 1000 == 0:
                progress(n)
        report = importer.finish()
        report.lines = n
    if db.dialect == "postgresql":
        # Statistics of the tables just filled, before the service plans a
        # query on them: autovacuum would take them within a minute or so,
        # and until then the planner guesses. (SQLite's planner picks the
        # same indexes without statistics.)
        with db.engine.begin() as conn:
            conn.execute(text(f"ANALYZE {', '.join(ALL_TABLES)}"))
    report.seconds = time.monotonic() - start
    if progress is not None:
        progress(n)
    return report


# -- the command --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvc import", description="Import a JSON-lines history (one publish a line) into a PVC store, "
                                       "in one transaction: a refused line writes nothing.")
    parser.add_argument("file", metavar="FILE.jsonl", help="the history; - reads stdin")
    parser.add_argument("--data", metavar="DIR", type=Path, required=True, help="data directory (blobs, SQLite)")
    parser.add_argument("--db", metavar="URL", help="database URL (default: SQLite in DIR)")
    parser.add_argument("--allow-missing-blobs", action="store_true",
                        help="accept manifests naming blobs the store lacks (benchmarks: reads of those files fail)")
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"pvc: error: {message}", file=sys.stderr)
    return code


def _read(stream: Any, counter: list[int]) -> Iterator[bytes]:
    for raw in stream:
        counter[0] += len(raw)
        yield raw


def main(args: list[str] | None = None) -> int:
    try:
        ns = _parser().parse_args(args)
    except SystemExit as stop:  # --help and usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if ns.batch < 1:
        return _fail("--batch must be at least 1", EXIT_USAGE)
    try:
        url = normalize_db_url(ns.db, ns.data)
    except (ValueError, exc.ArgumentError) as error:
        return _fail(f"--db: {error}", EXIT_USAGE)
    try:
        stream = sys.stdin.buffer if ns.file == "-" else open(ns.file, "rb")  # noqa: SIM115
    except OSError as error:
        return _fail(f"cannot read {ns.file}: {error.strerror or error}", EXIT_USAGE)
    total = None if ns.file == "-" else Path(ns.file).stat().st_size
    db = None
    try:
        if url.startswith("sqlite"):
            ns.data.mkdir(parents=True, exist_ok=True)
        db = Database(url)
        db.create_schema()
        counter = [0]
        with transfer_progress("importing", unit="lines") as update:
            report = import_history(db, _read(stream, counter), allow_missing_blobs=ns.allow_missing_blobs,
                                    batch=ns.batch,
                                    progress=None if update is None else (lambda n: update(counter[0], total, n, 0)))
    except ImportRefused as refused:
        return _fail(f"{ns.file}: {refused}; nothing was imported", EXIT_REFUSED)
    except SchemaError as error:
        return _fail(str(error), EXIT_INTERNAL)
    except exc.SQLAlchemyError as error:
        return _fail(f"database error, nothing was imported: {str(error).splitlines()[0]}", EXIT_INTERNAL)
    except OSError as error:
        return _fail(f"{error}; nothing was imported", EXIT_INTERNAL)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        if db is not None:
            db.dispose()
    print(f"{report.summary()} from {report.lines:,} lines")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
