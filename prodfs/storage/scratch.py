"""Scratch trees: the writable tree of a workspace output, on local disk.

One directory per (workspace, output product)::

    tree.db        names, types, modes, times, and the base payloads not yet written
    data/<id>      the bytes of every file written since the tree started
    lock           held (flock) by the one mount serving the tree

The tree is a small filesystem of its own: every name lives in ``tree.db``
(SQLite, WAL), a file's bytes either in the blob cache (``sha256`` set: a
payload of the version the tree started from, nothing copied) or in
``data/<id>`` (written here). One transaction is one operation, so a rename
over an existing name (the atomic save of every DCC) is atomic, and a
SIGKILL of the daemon loses nothing that was answered: commits and writes
are in the kernel's hands when the handler returns. `sync` makes them
durable across a power loss (``fsync`` of a file of the tree calls it).

Copy-on-write: a base file is copied from the blob cache into ``data/`` the
first time it is opened for writing; until the row says so (one commit),
the base payload is what the name serves, so a copy cut short is never seen.

Also kept here: which input versions the mount served while the tree was
in use (``used``), and the version the tree started from (``base``); both
survive the daemon. No pyfuse3 and no network here: `prodfs.mount.outputs`
drives it, and it is tested on its own.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pvc_client import Entry

__all__ = ["ROOT_ID", "Item", "ScratchTree", "ScratchBusy", "tree_dir"]

ROOT_ID = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,            -- file, dir, symlink
    mode INTEGER NOT NULL,         -- permission bits
    mtime_ns INTEGER NOT NULL,     -- for base files, dirs and links; written files keep theirs on data/<id>
    sha256 TEXT,                   -- a base payload not written here yet
    size INTEGER NOT NULL DEFAULT 0,
    target TEXT,
    UNIQUE (parent, name)
);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS used (pri TEXT PRIMARY KEY, number INTEGER NOT NULL, time REAL NOT NULL);
"""
_COLUMNS = "id, parent, name, type, mode, mtime_ns, sha256, size, target"


class ScratchBusy(Exception):
    """Another process (a second mount of the same workspace) serves this tree."""


@dataclass(slots=True)
class Item:
    id: int
    parent: int
    name: str
    type: str
    mode: int
    mtime_ns: int
    sha256: str | None
    size: int
    target: str | None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def written(self) -> bool:
        """A file whose bytes live in ``data/`` (not a base payload)."""
        return self.type == "file" and self.sha256 is None


def tree_dir(scratch: Path, workspace: str, pri: str) -> Path:
    """Where the tree of output ``pri`` of ``workspace`` lives under the scratch directory."""
    return scratch / quote(workspace, safe="") / quote(pri, safe=":-_.")


def _err(code: int, what: str) -> OSError:
    return OSError(code, os.strerror(code), what)


class ScratchTree:
    """One output's tree. Methods block briefly (one SQLite transaction, a few syscalls)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise ScratchBusy(f"{path} is in use by another mount") from None
        os.ftruncate(self._lock, 0)
        os.write(self._lock, f"{os.getpid()}\n".encode())
        self.db = sqlite3.connect(path / "tree.db", isolation_level=None, check_same_thread=False)
        # One process holds the tree (the flock above): exclusive locking keeps the WAL index
        # in memory, not in a shared-memory file, so a scratch directory on a network disk works.
        self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self.db.execute("PRAGMA journal_mode=WAL")
        # Commits reach the kernel before a handler answers (a daemon crash loses nothing);
        # `sync` checkpoints them to the disk (a power loss after fsync loses nothing).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._sweep()

    def close(self) -> None:
        self.db.close()
        os.close(self._lock)

    # -- start ---------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.get(ROOT_ID) is not None

    def info(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM info")}

    def _set_info(self, **values: object) -> None:
        self.db.executemany("INSERT OR REPLACE INTO info (key, value) VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in values.items()])

    def start(self, pri: str, base: int | None, entries: Iterable[Entry], mtime_ns: int) -> None:
        """Begin the tree as version ``base`` of ``pri`` (its ``entries``), or empty: one transaction."""
        now = time.time()
        with self._tx():
            self.db.execute("DELETE FROM items")
            self.db.execute("DELETE FROM used")
            self.db.execute(f"INSERT INTO items ({_COLUMNS}) VALUES (?, 0, '', 'dir', ?, ?, NULL, 0, NULL)",
                            (ROOT_ID, 0o755, mtime_ns))
            ids = {"": ROOT_ID}
            for e in sorted(entries, key=lambda e: e.path.count("/")):
                head, _, name = e.path.rpartition("/")
                cur = self.db.execute(
                    "INSERT INTO items (parent, name, type, mode, mtime_ns, sha256, size, target) VALUES (?,?,?,?,?,?,?,?)",
                    (ids[head], name, e.type, e.mode, mtime_ns, e.sha256 if e.type == "file" else None,
                     e.size if e.type == "file" else 0, e.target))
                if e.type == "dir":
                    ids[e.path] = cur.lastrowid
            self._set_info(pri=pri, base=base, started=now)
        for child in self.data.iterdir():  # bytes of an earlier start
            child.unlink()

    def rebase(self, number: int) -> None:
        """After a publish: the tree is now version ``number``; what it holds stays as it is."""
        with self._tx():
            self._set_info(base=number, rebased=time.time())

    # -- reading -------------------------------------------------------------
    def get(self, item_id: int) -> Item | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return Item(*row) if row else None

    def child(self, parent: int, name: str) -> Item | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM items WHERE parent = ? AND name = ?", (parent, name)).fetchone()
        return Item(*row) if row else None

    def children(self, parent: int) -> list[Item]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM items WHERE parent = ? ORDER BY name", (parent,))
        return [Item(*r) for r in rows]

    def data_path(self, item_id: int) -> Path:
        return self.data / str(item_id)

    def size_and_mtime(self, item: Item) -> tuple[int, int]:
        if item.written:
            try:
                st = os.stat(self.data_path(item.id))
            except FileNotFoundError:  # never written after a crash before its first byte: empty
                return 0, item.mtime_ns
            return st.st_size, st.st_mtime_ns
        if item.type == "symlink":
            return len((item.target or "").encode()), item.mtime_ns
        return item.size, item.mtime_ns

    def walk(self) -> Iterator[tuple[str, Item]]:
        """Every item but the root, parents before children, with its path in the tree."""
        paths = {ROOT_ID: ""}
        todo = [ROOT_ID]
        while todo:
            parent = todo.pop()
            for item in self.children(parent):
                path = f"{paths[parent]}/{item.name}" if paths[parent] else item.name
                yield path, item
                if item.is_dir:
                    paths[item.id] = path
                    todo.append(item.id)

    # -- changing ------------------------------------------------------------
    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    def _must_dir(self, parent: int) -> Item:
        item = self.get(parent)
        if item is None:
            raise _err(errno.ENOENT, f"item {parent}")
        if not item.is_dir:
            raise _err(errno.ENOTDIR, item.name)
        return item

    def _free(self, parent: int, name: str) -> None:
        _check_name(name)
        if self.child(parent, name) is not None:
            raise _err(errno.EEXIST, name)

    def _insert(self, parent: int, name: str, kind: str, mode: int, target: str | None = None) -> Item:
        now = time.time_ns()
        cur = self.db.execute(
            "INSERT INTO items (parent, name, type, mode, mtime_ns, sha256, size, target) VALUES (?,?,?,?,?,NULL,0,?)",
            (parent, name, kind, mode & 0o7777, now, target))
        self._touch(parent, now)
        return Item(cur.lastrowid, parent, name, kind, mode & 0o7777, now, None, 0, target)  # type: ignore[arg-type]

    def _touch(self, parent: int, now: int | None = None) -> None:
        self.db.execute("UPDATE items SET mtime_ns = ? WHERE id = ?", (now or time.time_ns(), parent))

    def create(self, parent: int, name: str, mode: int) -> tuple[Item, int]:
        """A new empty file; returns it and an fd open for reading and writing."""
        self._must_dir(parent)
        self._free(parent, name)
        with self._tx():
            item = self._insert(parent, name, "file", mode)
            # made inside the transaction: a row never names a file that is not there
            fd = os.open(self.data_path(item.id), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        return item, fd

    def mkdir(self, parent: int, name: str, mode: int) -> Item:
        self._must_dir(parent)
        self._free(parent, name)
        with self._tx():
            return self._insert(parent, name, "dir", mode)

    def symlink(self, parent: int, name: str, target: str) -> Item:
        self._must_dir(parent)
        self._free(parent, name)
        with self._tx():
            return self._insert(parent, name, "symlink", 0o777, target)

    def unlink(self, parent: int, name: str) -> None:
        item = self.child(parent, name)
        if item is None:
            raise _err(errno.ENOENT, name)
        if item.is_dir:
            raise _err(errno.EISDIR, name)
        with self._tx():
            self.db.execute("DELETE FROM items WHERE id = ?", (item.id,))
            self._touch(parent)
        self._drop_data(item)

    def rmdir(self, parent: int, name: str) -> None:
        item = self.child(parent, name)
        if item is None:
            raise _err(errno.ENOENT, name)
        if not item.is_dir:
            raise _err(errno.ENOTDIR, name)
        if self.db.execute("SELECT 1 FROM items WHERE parent = ? LIMIT 1", (item.id,)).fetchone():
            raise _err(errno.ENOTEMPTY, name)
        with self._tx():
            self.db.execute("DELETE FROM items WHERE id = ?", (item.id,))
            self._touch(parent)

    def rename(self, parent: int, name: str, new_parent: int, new_name: str, *, noreplace: bool = False) -> Item | None:
        """Move a name, replacing what ``new_name`` held (POSIX rules); returns what was replaced."""
        item = self.child(parent, name)
        if item is None:
            raise _err(errno.ENOENT, name)
        _check_name(new_name)
        self._must_dir(new_parent)
        if item.is_dir and self._is_below(new_parent, item.id):
            raise _err(errno.EINVAL, f"{name}: cannot move a directory into itself")
        old = self.child(new_parent, new_name)
        if old is not None and old.id == item.id:
            return None
        if old is not None:
            if noreplace:
                raise _err(errno.EEXIST, new_name)
            if old.is_dir and not item.is_dir:
                raise _err(errno.EISDIR, new_name)
            if item.is_dir and not old.is_dir:
                raise _err(errno.ENOTDIR, new_name)
            if old.is_dir and self.db.execute("SELECT 1 FROM items WHERE parent = ? LIMIT 1", (old.id,)).fetchone():
                raise _err(errno.ENOTEMPTY, new_name)
        now = time.time_ns()
        with self._tx():  # one commit: the new name appears and the old one goes at once
            if old is not None:
                self.db.execute("DELETE FROM items WHERE id = ?", (old.id,))
            self.db.execute("UPDATE items SET parent = ?, name = ? WHERE id = ?", (new_parent, new_name, item.id))
            self._touch(parent, now)
            self._touch(new_parent, now)
        if old is not None:
            self._drop_data(old)
        return old

    def _is_below(self, item_id: int, ancestor: int) -> bool:
        while item_id and item_id != ROOT_ID:
            if item_id == ancestor:
                return True
            row = self.db.execute("SELECT parent FROM items WHERE id = ?", (item_id,)).fetchone()
            item_id = row[0] if row else 0
        return False

    def _drop_data(self, item: Item) -> None:
        # An fd still open on it keeps reading (POSIX unlink); the name goes now.
        if item.written:
            try:
                os.unlink(self.data_path(item.id))
            except FileNotFoundError:
                pass

    def copy_payload(self, item: Item, payload: str | os.PathLike[str] | None) -> None:
        """The first half of a copy-up, for a worker thread: the bytes into ``data/`` (None: empty).

        Touches no row: the connection stays on the caller's thread, so that no other
        statement ever lands inside a transaction of another thread's."""
        tmp = self.data / f"{item.id}.part"
        if payload is None:
            open(tmp, "wb").close()
        else:
            shutil.copyfile(payload, tmp)
            os.chmod(tmp, 0o600)
        os.utime(tmp, ns=(item.mtime_ns, item.mtime_ns))
        os.rename(tmp, self.data_path(item.id))

    def mark_written(self, item: Item) -> Item:
        """The second half: from this commit on, the name serves ``data/<id>``."""
        with self._tx():
            self.db.execute("UPDATE items SET sha256 = NULL, size = 0 WHERE id = ?", (item.id,))
        item.sha256, item.size = None, 0
        return item

    def copy_up(self, item: Item, payload: str | os.PathLike[str] | None) -> Item:
        """Make a base file a written one: its bytes copied from ``payload`` (None: start empty)."""
        if not item.written:
            self.copy_payload(item, payload)
            self.mark_written(item)
        return item

    def set_mode(self, item: Item, mode: int) -> None:
        with self._tx():
            self.db.execute("UPDATE items SET mode = ? WHERE id = ?", (mode & 0o7777, item.id))
        item.mode = mode & 0o7777

    def set_mtime(self, item: Item, mtime_ns: int) -> None:
        if item.written:
            os.utime(self.data_path(item.id), ns=(mtime_ns, mtime_ns))
            return
        with self._tx():
            self.db.execute("UPDATE items SET mtime_ns = ? WHERE id = ?", (mtime_ns, item.id))
        item.mtime_ns = mtime_ns

    def truncate(self, item: Item, size: int) -> None:
        if not item.written:
            raise _err(errno.EINVAL, "copy a base file up before truncating it")
        os.truncate(self.data_path(item.id), size)

    def checkpoint(self) -> None:
        """Every commit so far into tree.db, synced (on the connection's thread)."""
        self.db.execute("PRAGMA wal_checkpoint(FULL)")

    def sync_data_dir(self) -> None:
        """The names of ``data/`` on the disk (may run in a worker thread)."""
        fd = os.open(self.data, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Everything answered so far, on the disk (a power loss keeps it)."""
        self.checkpoint()
        self.sync_data_dir()

    # -- what was used --------------------------------------------------------
    def record_use(self, pri: str, number: int) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO used (pri, number, time) VALUES (?, ?, ?)", (pri, number, time.time()))

    def used(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT pri, number FROM used ORDER BY pri"))

    def _sweep(self) -> None:
        """Bytes no row names (a crash between a commit and an unlink, a copy cut short): gone."""
        known = {str(r[0]) for r in self.db.execute("SELECT id FROM items WHERE type = 'file' AND sha256 IS NULL")}
        for child in self.data.iterdir():
            if child.name not in known:
                child.unlink()


class _Transaction:
    """``with``: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (nested: joins the outer one)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> _Transaction:
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if not self.outer:
            return
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _check_name(name: str) -> None:
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise _err(errno.EINVAL, repr(name))
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        raise _err(errno.ENAMETOOLONG, name[:40])
