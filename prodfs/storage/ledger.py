"""The verification ledger of a payload cache: which blobs were hashed, and what their files looked like then.

A blob is hashed when it enters the cache (`BlobCache._fetch`) or when a
process finds it on disk unrecorded. The ledger keeps, per blob, the file's
signature at that moment: inode, size, mtime and ctime, in nanoseconds. A
later process that finds the same signature trusts the blob without hashing
it again, as CernVM-FS trusts what it verified on download: a render job's
first read of a cached 256 MiB payload then costs a read, not a hash.

What the signature catches: any write, truncation, copy, restore or
replacement of the file by ordinary means, since each of them changes the
ctime, which no process can set back. What it cannot catch: the disk
changing the bytes under an unchanged inode (bit rot). `prodfs fsck` hashes
every blob again for that, and ``--cache-verify per-mount`` makes every new
daemon hash each blob at first use as before. It guards against accidents,
not against whoever can write the cache directory: they could rewrite the
ledger as well as the blobs (keep the cache owned by the daemon's user).

The ledger is a SQLite file beside ``blobs/``, shared by every process using
the cache (WAL). It is an optimisation only: if it cannot be read or written,
blobs are hashed as if it were empty, with one warning. It is used on the
daemon's event loop, so it never waits long for another process's write: a
busy ledger costs a record (a hash later), never a stalled mount.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Ledger", "Signature", "signature_of", "fsignature_of"]

# (inode, size, mtime_ns, ctime_ns) of a blob's file
Signature = tuple[int, int, int, int]

_BUSY_WAIT = 0.2  # seconds to wait for another process's write before giving up on one record


def _sig(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def signature_of(path: str | os.PathLike) -> Signature | None:
    try:
        return _sig(os.stat(path))
    except OSError:
        return None


def fsignature_of(fd: int) -> Signature | None:
    """The signature of an open blob, or None once it is no longer in the cache (unlinked)."""
    st = os.fstat(fd)
    return _sig(st) if st.st_nlink > 0 else None


class Ledger:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        try:
            # Used only from the thread that runs trio (sqlite's own check would
            # refuse a cache built in one thread and served in another). Setting
            # up may wait for another process: it happens before serving.
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a lost row costs one hash, never a wrong answer
            db.execute(
                "CREATE TABLE IF NOT EXISTS verified ("
                " sha TEXT PRIMARY KEY, ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER)"
            )
            db.execute(f"PRAGMA busy_timeout = {int(_BUSY_WAIT * 1000)}")
            self._db = db
        except sqlite3.Error as exc:
            self._broken(exc)

    def _failed(self, exc: sqlite3.Error) -> None:
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            log.debug("cache: verification ledger busy (%s): one record skipped", exc)
            return
        self._broken(exc)

    def _broken(self, exc: Exception) -> None:
        log.warning("cache: verification ledger %s unusable (%s): blobs are hashed at first use", self.path, exc)
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db = None

    def get(self, sha: str) -> Signature | None:
        return self.get_many([sha]).get(sha)

    def get_many(self, shas: Sequence[str]) -> dict[str, Signature]:
        """The recorded signatures of those of ``shas`` the ledger holds: one query per 500."""
        out: dict[str, Signature] = {}
        if self._db is None:
            return out
        try:
            for i in range(0, len(shas), 500):
                part = list(shas[i:i + 500])
                rows = self._db.execute(
                    "SELECT sha, ino, size, mtime_ns, ctime_ns FROM verified"
                    f" WHERE sha IN ({','.join('?' * len(part))})", part)
                for sha, *sig in rows:
                    out[sha] = tuple(sig)  # type: ignore[assignment]
        except sqlite3.Error as exc:
            self._failed(exc)
        return out

    def put(self, sha: str, sig: Signature | None) -> None:
        if self._db is None or sig is None:
            return
        try:
            self._db.execute("INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)", (sha, *sig))
        except sqlite3.Error as exc:
            self._failed(exc)

    def put_many(self, records: Sequence[tuple[str, Signature]]) -> None:
        """Record many signatures in one transaction."""
        if self._db is None or not records:
            return
        try:
            with self._db:  # one commit for the lot
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)",
                                     [(sha, *sig) for sha, sig in records])
        except sqlite3.Error as exc:
            self._failed(exc)

    def drop(self, sha: str) -> None:
        if self._db is None:
            return
        try:
            self._db.execute("DELETE FROM verified WHERE sha = ?", (sha,))
        except sqlite3.Error as exc:
            self._failed(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
