"""The local content-addressed payload cache.

Layout: ``CACHE/blobs/ab/<sha256>``, one file per blob, shared by every version
and every mount that uses the same cache directory. A blob enters the cache
only through `_fetch`: it is downloaded to ``CACHE/tmp/``, hashed, fsynced and
renamed into place, so a crash never leaves a half blob under its name.

Integrity: a blob is served only while its file is the one that was hashed.
The verification ledger (`prodfs.storage.ledger`, ``CACHE/verified.sqlite``) keeps
each hashed blob's file signature (inode, size, mtime, ctime); a blob whose
file still has it is trusted by any process, and one whose file changed, or
that no process recorded, is hashed again before use (disk corruption, or a
tampered cache, is never served: it is dropped and refetched). With
``trust_ledger=False`` (``--cache-verify per-mount``) each process hashes
every blob at its first use instead. A blob that vanished is refetched.
Size is bounded by LRU eviction of blobs no open file holds. Readers get
their fds from `open_fd`, which keeps a bounded set of them open: the kernel
does not tell the daemon when a file is opened or closed (see
`prodfs.kernel._zeroopen`), so a read finds its blob by content, not by handle.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import trio

from pvc_client import Entry, PVCError, Unavailable, sha256_file, syncfs
from pvc_client import PACK_BLOB_LIMIT, Frame, plan_packs

from ..stats import Stats
from ._coalesce import Coalescer
from .ledger import Ledger, Signature, fsignature_of, signature_of

log = logging.getLogger(__name__)

__all__ = ["BlobCache", "CorruptBlob", "EMPTY_SHA256", "CheckReport", "check_cache"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PIPELINE_FROM = 4 << 20  # payloads larger than this are hashed and written beside the download
_AHEAD = 8  # megabytes a download may get ahead of its writer
_INLINE_FRAMES = 16  # payloads of a pack written between two checkpoints of the event loop
_INLINE_BYTES = 256 << 10  # ... when they are this small in all; larger ones go to a worker thread

# download(sha, sink) -> bytes written; the PVC client's download_blob fits.
Downloader = Callable[[str, "object"], Awaitable[int]]
# download_pack(shas, deliver) -> bytes delivered; the PVC client's download_pack fits
# (it hands ``deliver`` frames that hash to their names).
PackDownloader = Callable[[Sequence[str], Callable[[list[Frame]], Awaitable[None]]], Awaitable[int]]


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
        download_pack: PackDownloader | None = None,
    ) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self._prefix = f"{self.blob_dir}/"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._download = download
        self._download_pack = download_pack
        # blobs on their way in a pack: `ensure` waits for the pack instead of asking again
        self._arriving: dict[str, trio.Event] = {}
        # verified here, their ledger records waiting for the data to be on disk (`sync_ledger`)
        self._unsynced: list[str] = []
        self._subdirs: set[str] = set()  # blobs/ab/ directories known to exist
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
        """Close the kept fds and the ledger (at unmount), recording what waits to be."""
        while self._fds:
            self._drop_fd(next(iter(self._fds)))
        if self._unsynced:
            syncfs(self.blob_dir)
            self._record_synced(self._take_unsynced())
        self.ledger.close()

    # -- the ledger, written behind ------------------------------------------
    # A fetched blob is trusted by this process at once (it hashed the bytes
    # it wrote), but other processes may trust it only once its bytes are on
    # disk: the ledger record waits for one sync of the cache's filesystem
    # for the lot, instead of an fsync per blob on the path of an open.
    def _pending_record(self, sha: str) -> None:
        self._unsynced.append(sha)

    def _take_unsynced(self) -> list[str]:
        shas, self._unsynced = self._unsynced, []
        return shas

    def _record_synced(self, shas: Iterable[str]) -> None:
        # the signature as verified: a file changed since no longer matches it, and is hashed again
        self.ledger.put_many([(sha, sig) for sha in shas if (sig := self._verified.get(sha)) is not None])

    async def sync_ledger(self) -> int:
        """Make the blobs fetched since the last call durable, then record them in the ledger."""
        shas = self._take_unsynced()
        if shas:
            await trio.to_thread.run_sync(syncfs, self.blob_dir, limiter=self._limiter)
            self._record_synced(shas)
        return len(shas)

    async def keep_ledger(self, every: float = 1.0) -> None:
        """A task: `sync_ledger` every ``every`` seconds while there is something to record."""
        while True:
            await trio.sleep(every)
            await self.sync_ledger()

    async def ensure(self, sha: str, size: int) -> Path:
        """Return the local path of a verified blob, fetching it if needed."""
        arriving = self._arriving.get(sha)
        if arriving is not None:  # in a pack on its way: wait for it rather than ask again
            await arriving.wait()
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

    def _tmp_str(self, sha: str) -> str:
        """Where a download of ``sha`` is written before it is renamed into place (a name of its own)."""
        return f"{self.tmp_dir}/{sha}.{uuid.uuid4().hex[:8]}"

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
                    self._pending_record(sha)
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
        tmp = Path(self._tmp_str(sha))
        try:
            started = time.monotonic()
            with open(tmp, "wb") as f:
                # hashed as it arrives, never read back; a large one in a thread of its own
                # while the next bytes arrive
                sink = _HashingWriter(f) if size <= _PIPELINE_FROM else _PipelinedWriter(f)
                try:
                    written = await self._download(sha, sink)
                finally:
                    actual = await sink.digest()  # a pipelined one waits for its threads, whatever happened
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
        self._landed(sha, written, signature_of(self.path(sha)))  # after the rename, which sets the ctime
        log.debug("cache: fetched %s (%d bytes, %.3fs)", sha[:12], written, time.monotonic() - started)

    def _landed(self, sha: str, size: int, signature: Signature | None) -> None:
        if sha not in self._lru:
            self._lru[sha] = size
            self.size += size
        self._lru.move_to_end(sha)
        self._verified[sha] = signature
        self._pending_record(sha)
        self.stats.blobs_fetched += 1
        self.stats.bytes_fetched += size

    # -- many at once ---------------------------------------------------------
    async def fetch_many(self, items: Iterable[tuple[str, int]]) -> int:
        """Fetch, in packs, the small blobs of ``items`` that are neither here nor on their way.

        The blobs come in the order given (put the one a reader waits for
        first); each one's waiters in `ensure` go on as soon as it lands.
        Large blobs, blobs already on disk (verified or not) and blobs any
        task is fetching are left to `ensure`. A failed pack is not retried
        here: its blobs are fetched one by one when asked for. Returns how
        many blobs were asked for.
        """
        if self._download_pack is None:
            return 0
        todo: dict[str, int] = {}
        for sha, size in items:
            if (0 < size <= PACK_BLOB_LIMIT and sha not in todo and sha not in self._verified
                    and sha not in self._arriving and not self._fetches.in_flight(sha)
                    and not os.path.exists(self._path_str(sha))):
                todo[sha] = size
        if not todo:
            return 0
        waits = {sha: trio.Event() for sha in todo}
        self._arriving.update(waits)
        started = time.monotonic()
        try:
            for pack in plan_packs(list(todo.items())):
                self._evict_for(sum(size for _, size in pack))
                await self._download_pack([sha for sha, _ in pack], self._store_frames)
        finally:
            for sha, event in waits.items():
                if self._arriving.get(sha) is event:
                    del self._arriving[sha]
                event.set()
        log.debug("cache: fetched %d blobs in packs (%.3fs)", len(todo), time.monotonic() - started)
        return len(todo)

    async def try_fetch_many(self, items: Iterable[tuple[str, int]]) -> None:
        """`fetch_many`, leaving what a failed pack did not bring to `ensure` (which reports its own error).

        An outage is raised at once: asking again for each payload would only wait longer.
        """
        try:
            await self.fetch_many(items)
        except Unavailable:
            raise
        except (PVCError, OSError) as exc:
            log.info("cache: a pack failed (%s): its payloads are fetched one by one", exc)

    async def _store_frames(self, frames: list[Frame]) -> None:
        # Small payloads are written on the event loop, a few at a time with a
        # checkpoint between: in a worker thread the same writes took four times
        # as long here (each syscall hands the GIL back and forth with the loop),
        # and a group of them holds the loop about a millisecond.
        for i in range(0, len(frames), _INLINE_FRAMES):
            group = frames[i:i + _INLINE_FRAMES]
            if sum(len(f.data) for f in group) <= _INLINE_BYTES:
                landed = self._write_frames(group)
            else:
                landed = await trio.to_thread.run_sync(self._write_frames, group, limiter=self._limiter)
            for frame, signature in zip(group, landed):
                self._landed(frame.sha256, len(frame.data), signature)
                event = self._arriving.pop(frame.sha256, None)
                if event is not None:
                    event.set()
            await trio.sleep(0)

    def _write_frames(self, frames: list[Frame]) -> list[Signature | None]:
        """Write verified frames into place (a worker thread): tmp, then rename, as `_fetch` does.

        Strings, not Path objects, and the signature from the fd after the
        rename (which sets the ctime): a small payload costs five syscalls.
        """
        out: list[Signature | None] = []
        for frame in frames:
            sha = frame.sha256
            final = self._path_str(sha)
            tmp = self._tmp_str(sha)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(frame.data)
                while view:  # a short write is completed; a full disk raises
                    view = view[os.write(fd, view):]
                if sha[:2] not in self._subdirs:
                    os.makedirs(f"{self.blob_dir}/{sha[:2]}", exist_ok=True)
                    self._subdirs.add(sha[:2])
                os.replace(tmp, final)
                out.append(fsignature_of(fd))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            finally:
                os.close(fd)
        return out

    def usage(self) -> dict:
        return {
            "dir": str(self.root),
            "bytes": self.size,
            "blobs": len(self._lru),
            "limit": self.max_bytes,
            "open": len(self._open),
            "fds": len(self._fds),
        }


def fetch_ahead_plan(wanted: Entry, neighbours: Iterable[Entry], budget: int) -> list[tuple[str, int]]:
    """What to ask for when ``wanted`` must be fetched: it first, then small neighbours, ``budget`` bytes in all.

    Files of one directory of a version tend to be read together (a shot's
    layers, a sequence of frames, a texture set): one pack for them costs
    about what the request for the first one alone does.
    """
    assert wanted.sha256 is not None
    plan = [(wanted.sha256, wanted.size)]
    total = wanted.size
    listed = list(neighbours)
    # the names after it first (the next frames of a sequence), then those before
    at = next((i for i, e in enumerate(listed) if e.path == wanted.path), -1)
    for e in listed[at + 1:] + listed[:max(at, 0)]:
        if e.type != "file" or not e.size or e.sha256 is None or e.sha256 == wanted.sha256:
            continue
        if e.size > PACK_BLOB_LIMIT or total + e.size > budget:
            continue
        plan.append((e.sha256, e.size))
        total += e.size
    return plan


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


class _PipelinedWriter:
    """A file sink that hashes in one worker thread and writes in another, each in order.

    The event loop hands it a megabyte at a time and goes back to the
    network, so receiving, hashing and writing overlap (hashlib and file
    writes let go of the GIL). At most `_AHEAD` megabytes wait for either
    thread; then the loop waits: the disk sets the pace. `digest` (in a
    worker thread) waits for the rest and gives the digest; an error
    writing is raised there, or by the `write` that found it.
    """

    def __init__(self, f) -> None:  # noqa: ANN001 - a binary file
        self._f = f
        self._hash = hashlib.sha256()
        self._parts: list[bytes] = []
        self._size = 0
        self._pending: deque[tuple[Future[None], Future[int]]] = deque()
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prodfs-hash")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prodfs-write")

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= 1 << 20:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        if not self._parts:
            return
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._size = [], 0
        while self._pending and (len(self._pending) >= _AHEAD or all(f.done() for f in self._pending[0])):
            for done in self._pending.popleft():
                done.result()
        self._pending.append((self._hasher.submit(self._hash.update, data), self._writer.submit(self._f.write, data)))

    def _finish(self) -> str:
        try:
            self._hand_over()
            while self._pending:
                for done in self._pending.popleft():
                    done.result()
        finally:
            self._hasher.shutdown(wait=True)
            self._writer.shutdown(wait=True)
        return self._hash.hexdigest()

    async def digest(self) -> str:
        return await trio.to_thread.run_sync(self._finish)


class _HashingWriter:
    """A file sink that hashes what goes through it."""

    def __init__(self, f) -> None:  # noqa: ANN001 - a binary file
        self._f = f
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return self._f.write(data)

    async def digest(self) -> str:
        return self._hash.hexdigest()

