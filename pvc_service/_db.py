"""The database connection: engine set-up, transactions, schema creation, outages.

Two kinds of transaction, both synchronous (the routes run them in worker
threads):

- ``read()``: a consistent snapshot. On PostgreSQL ``REPEATABLE READ`` so that a
  graph and its feed cursor are read at the same instant; on SQLite (WAL) a
  deferred transaction already reads one snapshot.
- ``write()``: serialized with every other write. SQLite starts it with
  ``BEGIN IMMEDIATE`` (a deferred transaction that later wants to write fails
  with SQLITE_BUSY instead of waiting); PostgreSQL takes one transaction-level
  advisory lock. Serializing writes is what makes event ids appear in commit
  order (a feed reader at cursor N can never later see an event < N appear),
  and it makes version numbering trivially race-free; publishes are short, so
  the cost is small. The unique constraint on (product, number) stays as the
  last line of defence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, exc, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from ._schema import SCHEMA_VERSION, meta, metadata

__all__ = ["Database", "normalize_db_url", "is_outage", "SchemaError"]

log = logging.getLogger("pvc_service.db")

# Any constant: the key of the advisory lock that serializes writers.
_WRITE_LOCK_KEY = 0x50564331  # "PVC1"
_WRITE_OPTION = "pvc_write"
# PostgreSQL's planner cost of a random page read on the service's connections
_RANDOM_PAGE_COST = 1.1


class SchemaError(RuntimeError):
    """The database holds a schema this service does not know."""


def normalize_db_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL to use: SQLite in the data directory by default.

    ``postgresql://`` (as psql and libpq spell it) is rewritten to the psycopg 3
    driver, the one the project installs.
    """
    if not url:
        return f"sqlite:///{(data_dir / 'pvc.sqlite3').resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    parsed = make_url(url)  # raises ArgumentError on nonsense
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
    return url


def is_outage(error: BaseException) -> bool:
    """Whether an exception means the database is unreachable (retry later)."""
    if isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)):
        return True
    return isinstance(error, exc.DBAPIError) and bool(error.connection_invalidated)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        backend = make_url(url).get_backend_name()
        # a server's connections can die under the pool (a restart): each is
        # pinged when taken; a SQLite file's cannot, and the ping would be one
        # more statement in every request
        kwargs: dict[str, Any] = {"pool_pre_ping": backend != "sqlite"}
        if backend == "sqlite":
            # sqlite3's own timeout is its busy handler: writers wait for each other
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        else:
            kwargs["connect_args"] = {"connect_timeout": 10}
        # as many connections as worker threads (anyio's default limit is 40)
        kwargs.update(pool_size=10, max_overflow=30, pool_timeout=30)
        self.engine: Engine = create_engine(url, **kwargs)
        self.dialect: str = self.engine.dialect.name
        if self.dialect == "sqlite":
            self._setup_sqlite()
        else:
            self._setup_postgresql()

    def _setup_sqlite(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
            # take transaction control away from the sqlite3 module so that
            # BEGIN is ours (and can be IMMEDIATE)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get(_WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def _setup_postgresql(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
            # Every read is index probes for a page's or a closure's ids. With
            # the default cost of a random read (4, for disks that seek),
            # PostgreSQL prefers to scan a table of a few hundred thousand rows
            # over probing its index for 900 ids, which on a store that serves
            # from memory is ten times slower: 50 ms instead of 5 for one page's
            # dependencies at 100,000 products. This connection's planner is
            # told what the server's cache makes true; a lower setting a
            # database already has is kept.
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            try:
                cur = dbapi_conn.cursor()
                cur.execute("SELECT current_setting('random_page_cost')::float8")
                if cur.fetchone()[0] > _RANDOM_PAGE_COST:
                    cur.execute(f"SET random_page_cost = {_RANDOM_PAGE_COST}")
                cur.close()
            finally:
                dbapi_conn.autocommit = autocommit

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _WRITE_LOCK_KEY})
                yield conn

    def create_schema(self) -> None:
        """Create missing tables and indexes, and check (or record) the schema version.

        ``create_all`` creates an index only with its table; an index added
        to a table that a database already has is created here (``checkfirst``),
        so an existing store gets it at its next start.
        """
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for table in metadata.sorted_tables:
                for index in sorted(table.indexes, key=lambda i: i.name or ""):
                    if index.info.get("dialect", self.dialect) != self.dialect:
                        continue
                    if not conn.dialect.has_index(conn, table.name, index.name):
                        log.info("creating index %s on %s (once; a large store takes a while)",
                                 index.name, table.name)
                        index.create(conn)
        with self.write() as conn:
            stored = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if stored is None:
                conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(stored) > SCHEMA_VERSION:
                raise SchemaError(
                    f"the database has schema version {stored}, newer than this service's "
                    f"{SCHEMA_VERSION}: upgrade the service"
                )
            elif int(stored) < SCHEMA_VERSION:  # every step so far only added tables, made above
                conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
