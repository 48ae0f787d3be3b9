"""Whole-tree transfers over a store's blob and version calls: materializing a version here, publishing in `_publish`.

`PVCClient.materialize` and the publishing calls pass the client itself as
the `Store`; the protocol names exactly the calls used, so that neither
module depends on the client's class.

Both move many blobs, a few at a time. Workers catch their own failures and
stop taking work instead of letting the nursery cancel the others: requests
are never cancelled mid-flight (see `_client`), and the first error is raised
once every in-flight transfer has ended.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol

import trio

from ._errors import InvalidInput, PVCError
from ._manifest import Entry, validate_manifest
from ._pack import PACK_BLOB_LIMIT, Frame, plan_packs
from ._pri import parse_ref

if TYPE_CHECKING:
    from ._args import JSON, Progress, TimeArg
    from ._pack import Source

__all__ = ["Store", "materialize"]


class Store(Protocol):
    """The calls of `PVCClient` that whole-tree transfers make."""

    TRANSFER_CONCURRENCY: int  # transfers in flight at once

    async def missing_blobs(self, shas: Iterable[str]) -> list[str]: ...
    async def upload_blob(self, sha: str, source: bytes | os.PathLike[str] | str) -> JSON: ...
    async def upload_pack(self, items: Sequence[Source]) -> JSON: ...
    async def publish(self, pri: str, manifest: Iterable[JSON], *, dependencies: Sequence[str] = (),
                      labels: Sequence[str] = (), message: str = "", author: str | None = None,
                      at: TimeArg = None, workspace: JSON | None = None) -> JSON: ...
    async def publish_many(self, publications: Sequence[tuple[str, Iterable[JSON], Mapping[str, Any]]]
                           ) -> list[JSON]: ...
    async def resolve(self, ref: str, as_of: TimeArg = None) -> JSON: ...
    async def download_blob(self, sha: str, sink: BinaryIO | IO[bytes], *, offset: int = 0,
                            length: int | None = None) -> int: ...
    async def download_pack(self, shas: Sequence[str], deliver: Callable[[list[Frame]], Awaitable[None]]) -> int: ...

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# setuid/setgid bits from a store are not honoured on a user's disk.
_MODE_MASK = 0o1777


async def _run_all(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run ``jobs`` with at most ``concurrency`` at once; raise the first failure at the end."""
    pending = iter(jobs)
    failures: list[BaseException] = []

    async def worker() -> None:
        for job in pending:  # one shared iterator: each job is taken exactly once
            if failures:
                return
            try:
                await job()
            except (PVCError, OSError) as exc:
                failures.append(exc)
                return

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, len(jobs))):
            nursery.start_soon(worker)
    if failures:
        raise failures[0]


class _Meter:
    def __init__(self, total: int, files: int, progress: Progress | None) -> None:
        self.done = self.files_done = 0
        self.total, self.files = total, files
        self._progress = progress

    def add(self, n: int, files: int = 0) -> None:
        self.done += n
        self.files_done += files
        if self._progress is not None:
            self._progress(self.done, self.total, self.files_done, self.files)


class _HashingSink:
    """A file sink that hashes and counts what it is given, reporting progress."""

    def __init__(self, fd: int, meter: _Meter) -> None:
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._meter = meter
        self.size = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        self._meter.add(len(data))
        return len(data)

    def close(self) -> None:
        self._file.close()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _part_name(path: Path) -> Path:
    # A file is only ever visible under its real name once complete and verified; the
    # random part keeps the temporary name clear of any name the manifest itself uses.
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.pvc-part")


def _check_target(target: Path) -> bool:
    """True if ``target`` exists (and is an empty directory); refuse anything else."""
    try:
        st = target.stat()  # a symlink to an empty directory is as good as the directory
    except FileNotFoundError:
        if target.is_symlink():
            raise InvalidInput(f"{target}: is a dangling symlink") from None
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{target}: exists and is not a directory")
    if any(target.iterdir()):
        raise InvalidInput(f"{target}: directory is not empty; refusing to write into it")
    return True


def _make_staging(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        staging = target.with_name(f".{target.name}.pvc-get-{secrets.token_hex(4)}")
        try:
            os.mkdir(staging, 0o777)  # the umask applies, as for a plain mkdir
            return staging
        except FileExistsError:
            continue


def _remove_contents(root: Path, *, remove_root: bool) -> None:
    """Undo a failed materialize, including directories already made read-only."""
    for dirpath, dirs, _files in os.walk(root):  # top-down: a directory is opened before we descend
        for name in dirs:
            os.chmod(os.path.join(dirpath, name), 0o700)
    for child in list(root.iterdir()) if root.exists() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if remove_root:
        shutil.rmtree(root, ignore_errors=True)


async def materialize(
    client: Store,
    ref: str,
    directory: str | os.PathLike[str],
    *,
    as_of: TimeArg,
    progress: Progress | None,
) -> JSON:
    parse_ref(str(ref))
    target = Path(directory)
    existed = _check_target(target)
    version = await client.resolve(ref, as_of)
    entries = validate_manifest(version["manifest"])  # trust nothing from the wire
    # A new directory is filled under a hidden sibling name and renamed into place at
    # the end, so a failure never leaves a half-written tree under the asked-for name.
    work = target if existed else _make_staging(target)
    try:
        await _fill(client, work, entries, progress)
        if not existed:
            os.rename(work, target)
    except BaseException:
        _remove_contents(work, remove_root=not existed)
        raise
    return version


async def _fill(client: Store, root: Path, entries: list[Entry], progress: Progress | None) -> None:
    files: dict[str, list[Entry]] = {}
    for entry in entries:  # sorted by path: a parent always comes before its children
        path = root / entry.path
        if entry.type == "dir":
            os.mkdir(path, 0o700)  # owner-writable until its files are in; real mode at the end
        elif entry.type == "symlink":
            assert entry.target is not None
            os.symlink(entry.target, path)
        else:
            assert entry.sha256 is not None
            files.setdefault(entry.sha256, []).append(entry)
    if EMPTY_SHA256 in files and files[EMPTY_SHA256][0].size == 0:  # nothing to fetch
        _place(root, files.pop(EMPTY_SHA256), b"")
    meter = _Meter(sum(group[0].size for group in files.values()), len(files), progress)
    meter.add(0)

    def fetch(sha: str, group: list[Entry]) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            await _download_verified(client, sha, group[0].size, root / group[0].path, meter)
            _place(root, group, None)
            meter.add(0, 1)
        return job

    def fetch_pack(pack: list[tuple[str, int]]) -> Callable[[], Awaitable[None]]:
        async def deliver(frames: list[Frame]) -> None:
            # verified by the client; written a run of frames per worker thread hop
            await trio.to_thread.run_sync(_place_frames, root, files, frames)
            meter.add(sum(len(f.data) for f in frames), len(frames))

        async def job() -> None:
            await client.download_pack([sha for sha, _ in pack], deliver)
        return job

    small, large = _split_by_size((sha, group[0].size) for sha, group in files.items())
    jobs = [fetch_pack(pack) for pack in plan_packs(small)] + [fetch(sha, files[sha]) for sha, _ in large]
    await _run_all(jobs, client.TRANSFER_CONCURRENCY)
    for entry in reversed(entries):  # deepest first, so a read-only parent comes last
        if entry.type == "dir":
            os.chmod(root / entry.path, entry.mode & _MODE_MASK)


def _split_by_size(items: Iterable[tuple[str, int]]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(blobs that travel in packs, blobs that have a request each)."""
    small: list[tuple[str, int]] = []
    large: list[tuple[str, int]] = []
    for sha, size in items:
        (small if size <= PACK_BLOB_LIMIT else large).append((sha, size))
    return small, large


def _place_frames(root: Path, files: dict[str, list[Entry]], frames: list[Frame]) -> None:
    for frame in frames:
        group = files[frame.sha256]
        if len(frame.data) != group[0].size:  # the right bytes, but not what the manifest promised
            raise PVCError(f"{group[0].path}: the manifest says {group[0].size} bytes, "
                           f"its blob {frame.sha256[:12]}... has {len(frame.data)}")
        _place(root, group, frame.data)


def _place(root: Path, group: list[Entry], data: bytes | None) -> None:
    """Write ``data`` under every name of ``group`` (None: the first is already there), then set modes."""
    first = root / group[0].path
    if data is not None:
        part = _part_name(first)
        with open(part, "xb") as f:
            f.write(data)
        os.replace(part, first)
    for other in group[1:]:  # same content, several names: fetched once
        part = _part_name(root / other.path)
        shutil.copyfile(first, part)
        os.replace(part, root / other.path)
    for entry in group:
        os.chmod(root / entry.path, entry.mode & _MODE_MASK)


async def _download_verified(client: Store, sha: str, size: int, path: Path, meter: _Meter) -> None:
    part = _part_name(path)
    sink = _HashingSink(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), meter)
    try:
        if size or sha != EMPTY_SHA256:
            await client.download_blob(sha, sink)
    finally:
        sink.close()
    if sink.size != size or sink.hexdigest() != sha:
        part.unlink(missing_ok=True)
        raise PVCError(
            f"{path.name}: blob {sha[:12]}... arrived corrupted "
            f"({sink.size} bytes, sha256 {sink.hexdigest()[:12]}...; expected {size} bytes)"
        )
    os.replace(part, path)
