"""The storage schema (SQLAlchemy Core), identical on SQLite and PostgreSQL.

Times are integer microseconds since the epoch (``pvc_client.to_micros``):
exact to compare, and the same on both databases. JSON documents are kept as
compact text so that both databases store exactly what was sent.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["SCHEMA_VERSION", "metadata", "meta", "products", "product_names", "versions",
           "dependencies", "version_origins", "blobs", "blob_places", "label_moves", "events", "workspaces",
           "workspace_revisions", "snapshots", "ALL_TABLES"]

# Bumped by every schema change an older service could not live with; a
# migration step reads the stored value. A table added for a new feature
# (``version_origins``) is not such a change: ``create_all`` adds it, and an
# older service simply never reads or writes it. Version 2: small blobs may
# live in pack files (``blob_places``), which a version-1 service would answer
# 404 for; a version-1 store needs nothing more than the table.
SCHEMA_VERSION = 2

# SQLite only auto-increments an ``INTEGER PRIMARY KEY`` (not BIGINT), so ids
# are BIGINT on PostgreSQL and INTEGER (which is 64-bit there anyway) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


class CompactJSON(TypeDecorator[Any]):
    """JSON stored as compact text (no spaces), decoded on read."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


metadata = MetaData()


def _only_on(dialect: str, index: Index) -> Index:
    """An index that only ``dialect`` gets: ``create_all`` obeys ``ddl_if``, and
    ``Database.create_schema`` reads ``info["dialect"]`` (public, unlike the former)."""
    index.info["dialect"] = dialect
    return index.ddl_if(dialect=dialect)


def _numbered_history(name: str, owner: str, owner_id: str, *, number: str, time: str,
                      payload: list[Column[Any]], unique: str, indexes: list[Index] | None = None) -> Table:
    """A history numbered 1, 2, ... per row of ``owner``: one row an entry.

    Columns, in this order: ``id``; ``owner_id`` (the owner's id); ``number``;
    ``time`` (microseconds); ``author``; then ``payload``. The unique constraint
    ``unique`` on (owner_id, number) is what stops two concurrent writers from
    taking the same number.
    """
    return Table(
        name, metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column(owner_id, Id, ForeignKey(f"{owner}.id"), nullable=False),
        Column(number, Integer, nullable=False),
        Column(time, BigInteger, nullable=False),
        Column("author", String(256), nullable=False),
        *payload,
        UniqueConstraint(owner_id, number, name=unique),
        *(indexes or []),
    )


meta = Table(
    "pvc_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

products = Table(
    "products", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # the time of the first version: before it the product does not exist
    Column("created_us", BigInteger, nullable=False),
)

# Every name a product ever had. A name is never reused, so an old name keeps
# resolving to its product; the canonical name as of T is the newest with
# began_us <= T (ties broken by id).
product_names = Table(
    "product_names", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("product_id", Id, ForeignKey("products.id"), nullable=False),
    Column("name", String(255), nullable=False, unique=True),
    Column("began_us", BigInteger, nullable=False),
    Index("ix_product_names_product", "product_id", "began_us"),
)

# Pages by canonical name (``/index``, ``GET /products``) walk the names in
# byte order. SQLite's unique index on ``name`` is in that order already;
# PostgreSQL's follows the database's collation, which need not be "C".
_only_on("postgresql", Index("ix_product_names_name_c", product_names.c.name.collate("C")))

versions = _numbered_history(
    "versions", "products", "product_id", number="number", time="created_us",
    payload=[Column("message", Text, nullable=False), Column("manifest", CompactJSON, nullable=False)],
    unique="uq_versions_product_number",
    indexes=[Index("ix_versions_created", "created_us")],
)

dependencies = Table(
    "dependencies", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("version_id", Id, ForeignKey("versions.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("dep_product_id", Id, ForeignKey("products.id"), nullable=False),
    Column("dep_number", Integer, nullable=False),
    Index("ix_dependencies_version", "version_id", "position"),
)

# The workspace (and its revision) a version was published from, for the
# versions whose publish named one. A table of its own rather than a column of
# ``versions``: ``metadata.create_all`` adds a missing table to an existing
# database at start, but never a missing column, and there is no migration
# step. The name is kept as text (not the workspace's id) because that is what
# the API answers and a workspace is known by its name for good.
version_origins = Table(
    "version_origins", metadata,
    Column("version_id", Id, ForeignKey("versions.id"), primary_key=True, autoincrement=False),
    Column("workspace", String(128), nullable=False),
    Column("revision", Integer, nullable=False),
)

blobs = Table(
    "blobs", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_us", BigInteger, nullable=False),
)

# Where a small blob uploaded in a batch lies: in the pack file ``pack``, its
# bytes at ``offset`` (`pvc_service._blob_packs`). A blob without a row here
# is a file of its own. A table of its own for the same reason as
# ``version_origins``: stores made before it gain it at start.
blob_places = Table(
    "blob_places", metadata,
    Column("sha256", String(64), ForeignKey("blobs.sha256"), primary_key=True),
    Column("pack", String(32), nullable=False),
    Column("offset", BigInteger, nullable=False),
)

# Label history: the position as of T is the newest move at or before T; a
# deletion is a move to NULL.
label_moves = Table(
    "label_moves", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("product_id", Id, ForeignKey("products.id"), nullable=False),
    Column("label", String(255), nullable=False),
    Column("number", Integer, nullable=True),
    Column("moved_us", BigInteger, nullable=False),
    Column("author", String(256), nullable=False),
    Index("ix_label_moves_lookup", "product_id", "label", "moved_us"),
)

# The change feed: the id is the cursor. AUTOINCREMENT on SQLite so an id is
# never handed out twice.
events = Table(
    "events", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("time_us", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("pri", String(255), nullable=True),
    Column("data", CompactJSON, nullable=False),
    sqlite_autoincrement=True,
)

workspaces = Table(
    "workspaces", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_us", BigInteger, nullable=False),
)

workspace_revisions = _numbered_history(
    "workspace_revisions", "workspaces", "workspace_id", number="revision", time="changed_us",
    payload=[Column("deleted", Boolean, nullable=False), Column("spec", CompactJSON, nullable=False)],
    unique="uq_workspace_revision",
)

snapshots = Table(
    "snapshots", metadata,
    Column("id", String(16), primary_key=True),
    Column("created_us", BigInteger, nullable=False),
    Column("record", CompactJSON, nullable=False),
)

ALL_TABLES = [t.name for t in metadata.sorted_tables]
