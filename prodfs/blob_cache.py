"""The local content-addressed payload cache.

Layout: ``CACHE/blobs/ab/<sha256>``, one file per blob, shared by every version
and every mount that uses the same cache directory. A blob enters the cache
only through `_fetch`: it is downloaded to ``CACHE/tmp/``, hashed, fsynced and
renamed into place, so a crash never leaves a half blob under its name.

Integrity: a blob is served only while its file is the one that was hashed.
The verification ledger (`prodfs._ledger`, ``CACHE/verified.sqlite``) keeps
each hashed blob's file signature (inode, size, mtime, ctime); a blob whose
file still has it is trusted by any process, and one whose file changed, or
that no process recorded, is hashed again before use (disk corruption, or a
tampered cache, is never served: it is dropped and refetched). With
``trust_ledger=False`` (``--cache-verify per-mount``) each process hashes
every blob at its first use instead. A blob that vanished is refetched.
Size is bounded by LRU eviction of blobs no open file holds. Readers get
their fds from `open_fd`, which keeps a bounded set of them open: the kernel
does not tell the daemon when a file is opened or closed (see
`prodfs._zeroopen`), so a read finds its blob by content, not by handle.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import trio

from pvc_client import sha256_file

from ._coalesce import Coalescer
from ._ledger import Ledger, Signature, fsignature_of, signature_of
from .stats import Stats

log = logging.getLogger(__name__)

__all__ = ["BlobCache", "CorruptBlob", "EMPTY_SHA256", "CheckReport", "check_cache"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# download(sha, sink) -> bytes written; the PVC client's download_blob fits.
Downloader = Callable[[str, "object"], Awaitable[int]]


class CorruptBlob(OSError):
    """A blob whose content does not hash to its name (after a refetch too)."""

    def __init__(self, sha: str, detail: str) -> None:
        super().__init__(errno.EIO, f"blob {sha[:12]}: {detail}")


class BlobCache:
    def __init__(
        self,
        root: str | os.PathLike,
        download: Downloader,
        *,
        max_bytes: int | None = None,
        stats: Stats | None = None,
        threads: int = 4,
        max_fds: int = 256,
        trust_ledger: bool = True,
    ) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self._prefix = f"{self.blob_dir}/"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._download = download
        self.max_bytes = max_bytes
        self.stats = stats or Stats()
        self._limiter = trio.CapacityLimiter(threads)
        self._fetches: Coalescer[Path] = Coalescer()
        # sha -> the file's signature when it was hashed (here, or by another
        # process, per the ledger): a change (tampering, a partial restore)
        # means hashing it again before use
        self._verified: dict[str, Signature | None] = {}
        self.ledger = Ledger(self.root / "verified.sqlite")
        self.trust_ledger = trust_ledger
        self._open: dict[str, int] = {}  # sha -> open handles; never evicted while > 0
        self._lru: OrderedDict[str, int] = OrderedDict()  # sha -> size, oldest first
        # sha -> a read-only fd kept for the next reads, least recently used first;
        # a kept fd holds its blob as an open file does (never evicted)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self.max_fds = max_fds
        # told when a blob leaves the cache (evicted, removed, corrupt): the C read path drops it
        self.on_forget: Callable[[str], None] | None = None
        # asked before evicting: the blobs the C read path served since it was last asked
        self.read_elsewhere: Callable[[], Iterable[str]] | None = None
        self.size = 0
        self._clean_tmp()
        self._scan()

    # -- bookkeeping -------------------------------------------------------
    def _clean_tmp(self) -> None:
        # Leftovers of a crash mid-download: never promoted, safe to drop.
        for p in self.tmp_dir.iterdir():
            try:
                p.unlink()
            except OSError:
                pass

    def _scan(self) -> None:
        found = []
        for sub in self.blob_dir.iterdir():
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                try:
                    st = p.stat()
                except OSError:
                    continue
                found.append((st.st_atime, p.name, st.st_size))
        for _, sha, size in sorted(found):
            self._lru[sha] = size
            self.size += size

    def path(self, sha: str) -> Path:
        return self.blob_dir / sha[:2] / sha

    def __contains__(self, sha: str) -> bool:
        return sha in self._lru

    def acquire(self, sha: str) -> None:
        self._open[sha] = self._open.get(sha, 0) + 1

    def release(self, sha: str) -> None:
        n = self._open.get(sha, 0) - 1
        if n > 0:
            self._open[sha] = n
        else:
            self._open.pop(sha, None)

    def _forget(self, sha: str) -> None:
        size = self._lru.pop(sha, None)
        if size is not None:
            self.size -= size
        self._verified.pop(sha, None)
        self.ledger.drop(sha)
        if self.on_forget is not None:
            self.on_forget(sha)

    def _evict_for(self, incoming: int) -> None:
        if self.max_bytes is None or self.size + incoming <= self.max_bytes:
            return
        if self.read_elsewhere is not None:
            for sha in self.read_elsewhere():  # used, if not through this object: evicted last
                if sha in self._lru:
                    self._lru.move_to_end(sha)
        for sha in list(self._lru):
            if self.size + incoming <= self.max_bytes:
                break
            if sha in self._open or self._fetches.in_flight(sha):
                continue
            try:
                self.path(sha).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cache: cannot evict %s: %s", sha[:12], exc)
                continue
            self._forget(sha)
            log.debug("cache: evicted %s", sha[:12])

    # -- the one way in ------------------------------------------------------
    def open_verified(self, sha: str) -> int | None:
        """A read-only fd on a blob this process verified and that is unchanged since; else None.

        The hot path of a warm open: no Path objects and fstat on the fd it
        opens instead of a stat by path. None means "take `ensure`", which
        hashes a changed file again or fetches a missing one.
        """
        signature = self._verified.get(sha)
        if signature is None:
            return None
        try:
            fd = os.open(self._path_str(sha), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        if not self._unchanged(fd, sha):
            os.close(fd)
            return None
        self._lru.move_to_end(sha)
        self.stats.cache_hits += 1
        return fd

    async def open_fd(self, sha: str, size: int) -> int:
        """A read-only fd on the verified blob, fetched if needed; it stays owned by the cache.

        Use it without awaiting in between, or `os.dup` it first: another
        blob's read may close it once more than `max_fds` are kept.
        """
        fd = self._fds.get(sha)
        if fd is not None:
            if self._unchanged(fd, sha):
                self._fds.move_to_end(sha)
                return fd
            # changed in place or removed since it was verified: `ensure` checks or fetches it again
            self._drop_fd(sha)
        fd = self.open_verified(sha)
        if fd is None:  # not verified yet, changed or gone since: check or fetch it
            path = await self.ensure(sha, size)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        kept = self._fds.get(sha)
        if kept is not None:  # a concurrent read of the same blob got here first
            os.close(fd)
            return kept
        self._fds[sha] = fd
        self.acquire(sha)
        while len(self._fds) > self.max_fds:
            self._drop_fd(next(iter(self._fds)))
        return fd

    def _unchanged(self, fd: int, sha: str) -> bool:
        """The file behind ``fd`` is still the one verified as ``sha`` (and still in the cache)."""
        sig = self._verified.get(sha)
        return sig is not None and fsignature_of(fd) == sig

    def _drop_fd(self, sha: str) -> None:
        os.close(self._fds.pop(sha))
        self.release(sha)

    def close(self) -> None:
        """Close the kept fds and the ledger (at unmount)."""
        while self._fds:
            self._drop_fd(next(iter(self._fds)))
        self.ledger.close()

    async def ensure(self, sha: str, size: int) -> Path:
        """Return the local path of a verified blob, fetching it if needed."""
        if sha in self._verified:
            if self._verified[sha] == signature_of(self.path(sha)):
                self._lru.move_to_end(sha)
                self.stats.cache_hits += 1
                return self.path(sha)
            log.warning("cache: %s changed on disk since it was verified: checking it again", sha[:12])
            self._verified.pop(sha, None)
        return await self._fetches.run(sha, lambda: self._ensure_slow(sha, size))

    def trusted_signatures(self, shas: Sequence[str]) -> dict[str, Signature]:
        """The signatures the blobs' files had when this or another process verified them.

        Blobs never verified are left out. Never hashes, never touches a file
        (for the C read path, which checks each file against its signature
        at every read); one ledger query for them all.
        """
        found = {sha: sig for sha in shas if (sig := self._verified.get(sha)) is not None}
        if self.trust_ledger and len(found) < len(shas):
            found.update(self.ledger.get_many([sha for sha in shas if sha not in found]))
        return found

    def path_bytes(self, sha: str) -> bytes:
        return os.fsencode(self._path_str(sha))

    def _path_str(self, sha: str) -> str:
        return f"{self._prefix}{sha[:2]}/{sha}"  # `path` without a Path object: for the hot paths

    def _on_disk(self, sha: str) -> Signature | None:
        """The signature of the blob's file, the LRU brought in line with the disk (one stat)."""
        before = signature_of(self.path(sha))
        if sha in self._lru and before is None:
            self._forget(sha)  # removed behind our back (a cleaned cache): fetch again
        if sha not in self._lru and before is not None:
            # put there by another process sharing the cache (prefetch, a second mount)
            self._lru[sha] = before[1]
            self.size += before[1]
        return before

    async def _ensure_slow(self, sha: str, size: int) -> Path:
        path = self.path(sha)
        before = self._on_disk(sha)
        if before is not None:
            # hashed by this or another process, and its file unchanged since: no need to hash again
            trusted = self.trust_ledger and self.ledger.get(sha) == before
            if trusted:
                actual = sha
            else:
                self.stats.blobs_hashed += 1
                actual = await trio.to_thread.run_sync(sha256_file, path, limiter=self._limiter)
            if actual == sha:
                self._verified[sha] = before
                if not trusted and signature_of(path) == before:  # not changed while it was hashed
                    self.ledger.put(sha, before)
                self._lru.move_to_end(sha)
                self.stats.cache_hits += 1
                return path
            log.error("cache: %s is corrupt on disk (hashes to %s); refetching", path, actual[:12])
            self.stats.error(f"corrupt cached blob {sha}")
            self._forget(sha)
            path.unlink(missing_ok=True)
        self.stats.cache_misses += 1
        await self._fetch(sha, size)
        return path

    async def _fetch(self, sha: str, size: int) -> None:
        self._evict_for(size)
        tmp = self.tmp_dir / f"{sha}.{uuid.uuid4().hex[:8]}"
        try:
            started = time.monotonic()
            with open(tmp, "wb") as sink:
                written = await self._download(sha, sink)
                await trio.to_thread.run_sync(_flush_and_sync, sink, limiter=self._limiter)
            actual = await trio.to_thread.run_sync(sha256_file, tmp, limiter=self._limiter)
            if actual != sha:
                self.stats.error(f"blob {sha} from the service hashes to {actual}")
                log.error("cache: blob %s from the service hashes to %s: refused", sha[:12], actual[:12])
                raise CorruptBlob(sha, f"service sent content hashing to {actual[:12]}")
            final = self.path(sha)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._lru[sha] = written
        self.size += written
        self._verified[sha] = signature_of(self.path(sha))  # after the rename, which sets the ctime
        self.ledger.put(sha, self._verified[sha])
        self.stats.blobs_fetched += 1
        self.stats.bytes_fetched += written
        log.debug("cache: fetched %s (%d bytes, %.3fs)", sha[:12], written, time.monotonic() - started)

    def usage(self) -> dict:
        return {
            "dir": str(self.root),
            "bytes": self.size,
            "blobs": len(self._lru),
            "limit": self.max_bytes,
            "open": len(self._open),
            "fds": len(self._fds),
        }


@dataclass
class CheckReport:
    blobs: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)  # removed: hashed to something else, or unreadable


def check_cache(root: str | os.PathLike, progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Hash every blob under ``root`` again: remove the corrupt ones, record the good ones in the ledger.

    The offline check behind ``prodfs fsck``, for what the ledger cannot see
    (bytes changed under an unchanged inode). Safe beside running daemons: a
    removed blob is refetched by the daemon that next reads it.
    """
    blob_dir = Path(root) / "blobs"
    ledger = Ledger(Path(root) / "verified.sqlite")
    report = CheckReport()
    paths = sorted(p for sub in blob_dir.iterdir() if sub.is_dir() for p in sub.iterdir()) if blob_dir.is_dir() else []
    try:
        for path in paths:
            before = signature_of(path)
            try:
                actual = sha256_file(path)
            except OSError as exc:
                if not path.exists():  # evicted by a daemon meanwhile
                    continue
                actual = f"unreadable ({exc})"
            report.blobs += 1
            report.bytes += before[1] if before else 0
            if actual == path.name:
                if signature_of(path) == before:
                    ledger.put(path.name, before)
            else:
                log.error("cache: %s is corrupt on disk (hashes to %s): removed", path, actual[:12])
                report.corrupt.append(path.name)
                ledger.drop(path.name)
                path.unlink(missing_ok=True)
            if progress is not None:
                progress(report.blobs, len(paths))
    finally:
        ledger.close()
    return report


def _flush_and_sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())
