"""Publishing trees: one product's directory or many, in one pipelined transfer.

`publish_directories` is what ``pvc publish`` and `PVCClient.publish_directory`
run. It goes in four steps, the middle two overlapped:

1. every tree is walked (names, modes, sizes) before any file is read, and
   every argument is checked: a typo costs no transfer;
2. files are hashed in worker threads, the large ones first (largest first),
   then the small ones a product at a time in path order;
3. each hashed run is asked about (``/blobs/missing``) and what the store
   lacks is uploaded at once, a large blob alone and small ones in packs, so
   that the store receives (and makes durable) while the client still hashes;
4. only once every blob of every tree is stored are the versions published,
   in one request (`PVCClient.publish_many`, one transaction at the service)
   per `PUBLISH_BATCH_LIMIT` of them.

Why this order: on one disk a publish is bound by the store's durable writes
of its largest files, so those start first; the small files of a hundred
products then cost a few packs and one ``/blobs/missing`` per pack, not a
round of requests each.

A failure in steps 1-3 publishes nothing (the blobs already stored are
harmless: content-addressed, and unreferenced). Step 4 is all or nothing too,
up to `PUBLISH_BATCH_LIMIT` versions; past that, if a later request is
refused, the error names the versions the earlier ones published.

Files are read again as they are sent: a file changed since it was hashed is
refused by the store, and nothing is published.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ._args import as_time, check_label, exact_ref, workspace_origin
from ._errors import InvalidInput, PVCError
from ._manifest import Entry, normalize_manifest, sha256_file, walk_directory
from ._pack import PACK_BLOB_LIMIT, plan_packs
from ._pri import parse_pri
from ._transfer import Store, _Meter, _run_all, _split_by_size

if TYPE_CHECKING:
    from ._args import JSON, Progress, TimeArg

__all__ = ["PUBLISH_BATCH_LIMIT", "Publication", "publish_directories", "publish_directory", "publish_manifest"]

# Threads hashing at once: hashlib releases the GIL, so two keep both cores of
# a small machine busy while the event loop feeds the uploads.
HASH_THREADS = 2
# A pack is sent once this much small content is hashed (or hashing is done):
# small enough that the store receives early, large enough to be a few requests.
_PACK_FLUSH_BYTES = 4 << 20
_PACK_FLUSH_BLOBS = 1024
# The most versions one `PVCClient.publish_many` request makes (one transaction at the service,
# whose body model imports this).
PUBLISH_BATCH_LIMIT = 1000


@dataclass(frozen=True)
class Publication:
    """One directory to publish as the next version of ``pri`` (`PVCClient.publish` has the fields)."""

    pri: str
    directory: str | os.PathLike[str]
    dependencies: Sequence[str] = ()
    labels: Sequence[str] = ()
    message: str = ""
    author: str | None = None
    at: TimeArg = None
    workspace: JSON | None = None

    def check(self) -> None:
        _check_publish(self.pri, self.dependencies, self.labels, self.at, self.workspace)

    def publish_args(self) -> dict[str, Any]:
        return {"dependencies": self.dependencies, "labels": self.labels, "message": self.message,
                "author": self.author, "at": self.at, "workspace": self.workspace}


@dataclass(slots=True)
class _File:
    path: Path
    size: int
    sha256: str | None = None


def _check_publish(pri: str, dependencies: Sequence[str], labels: Sequence[str], at: TimeArg,
                   workspace: JSON | None) -> None:
    # Everything that can be refused locally is refused before any byte is uploaded.
    parse_pri(str(pri))
    for dep in dependencies:
        exact_ref(dep, "dependency")
    for label in labels:
        check_label(label, settable=True)
    as_time(at)
    if workspace is not None:
        workspace_origin(workspace)


async def publish_directories(client: Store, items: Sequence[Publication], *,
                              progress: Progress | None = None) -> list[JSON]:
    """Publish every directory of ``items`` as a new version; returns the Versions in their order."""
    seen: set[str] = set()
    for item in items:
        item.check()
        pri = parse_pri(str(item.pri)).text
        if pri in seen:
            raise InvalidInput(f"{pri}: given twice; publish one directory per product at a time")
        seen.add(pri)
    trees = await trio.to_thread.run_sync(lambda: [list(walk_directory(item.directory)) for item in items])
    files = [[_File(local, entry.size) for entry, local in tree if local is not None] for tree in trees]
    every = [f for group in files for f in group]
    meter = _Meter(sum(f.size for f in every), len(every), progress)
    meter.add(0)  # the totals, from the start
    large = sorted((f for f in every if f.size > PACK_BLOB_LIMIT), key=lambda f: -f.size)
    small = [[f for f in group if f.size <= PACK_BLOB_LIMIT] for group in files]
    await _Uploader(client, meter).run([[f] for f in large] + [g for g in small if g])
    manifests = [_manifest(tree, group) for tree, group in zip(trees, files)]
    return await _publish_all(client, items, manifests)


async def publish_directory(client: Store, pri: str, directory: str | os.PathLike[str], *,
                            progress: Progress | None = None, **publish: Any) -> JSON:
    (version,) = await publish_directories(client, [Publication(pri, directory, **publish)], progress=progress)
    return version


def _manifest(tree: list[tuple[Entry, Path | None]], files: list[_File]) -> list[JSON]:
    hashed = iter(files)
    entries = [entry if local is None else dataclasses.replace(entry, sha256=next(hashed).sha256)
               for entry, local in tree]
    return normalize_manifest(e.to_json() for e in entries)


async def _publish_all(client: Store, items: Sequence[Publication], manifests: list[list[JSON]]) -> list[JSON]:
    if len(items) == 1:
        return [await client.publish(items[0].pri, manifests[0], **items[0].publish_args())]
    # One request (one transaction at the service) per PUBLISH_BATCH_LIMIT versions: all of them
    # or none, and one commit instead of one each (a hundred versions took 0.7-0.95 s one by one).
    versions: list[JSON] = []
    for start in range(0, len(items), PUBLISH_BATCH_LIMIT):
        batch = [(item.pri, manifest, item.publish_args())
                 for item, manifest in zip(items[start:start + PUBLISH_BATCH_LIMIT],
                                           manifests[start:start + PUBLISH_BATCH_LIMIT])]
        try:
            versions += await client.publish_many(batch)
        except PVCError as exc:
            if not versions:
                raise
            done = [v["ref"] for v in versions]
            shown = ", ".join(done[:5]) + (f" and {len(done) - 5} more" if len(done) > 5 else "")
            raise type(exc)(f"{exc.message} (published before it was refused: {shown})", status=exc.status) from exc
    return versions


class _Uploader:
    """Hash runs of files in worker threads and upload what the store lacks as each run is hashed."""

    def __init__(self, client: Store, meter: _Meter) -> None:
        self._client = client
        self._meter = meter
        self._failures: list[BaseException] = []
        self._sent: set[str] = set()  # asked about already: a blob shared by files goes once

    async def run(self, runs: list[list[_File]]) -> None:
        send, receive = trio.open_memory_channel[list[_File]](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hash_all, runs, send)
            nursery.start_soon(self._upload_all, receive)
        if self._failures:
            raise self._failures[0]

    async def _hash_all(self, runs: list[list[_File]], send: trio.MemorySendChannel[list[_File]]) -> None:
        pending = iter(runs)  # shared by the workers: taken in order, each once

        async def worker() -> None:
            for run in pending:
                if self._failures:
                    return
                try:
                    await trio.to_thread.run_sync(_hash_run, run)
                except OSError as exc:
                    self._failures.append(InvalidInput(f"{exc.filename}: cannot be read ({exc.strerror})"))
                    return
                await send.send(run)

        async with send, trio.open_nursery() as nursery:
            for _ in range(min(HASH_THREADS, len(runs))):
                nursery.start_soon(worker)

    async def _upload_all(self, receive: trio.MemoryReceiveChannel[list[_File]]) -> None:
        slots = trio.Semaphore(self._client.TRANSFER_CONCURRENCY)
        small: list[_File] = []
        small_bytes = 0
        async with receive, trio.open_nursery() as nursery:

            async def start(files: list[_File]) -> None:
                await slots.acquire()  # here, not in the task: hashing runs ahead, uploads do not pile up
                nursery.start_soon(self._store, files, slots)

            async for run in receive:
                if self._failures:
                    continue  # drain: the hashing side stops on its own
                if run[0].size > PACK_BLOB_LIMIT:
                    await start(run)
                    continue
                small.extend(run)
                small_bytes += sum(f.size for f in run)
                if small_bytes >= _PACK_FLUSH_BYTES or len(small) >= _PACK_FLUSH_BLOBS:
                    await start(small)
                    small, small_bytes = [], 0
            if small and not self._failures:
                await start(small)

    async def _store(self, files: list[_File], slots: trio.Semaphore) -> None:
        try:
            if self._failures:
                return
            sources: dict[str, _File] = {}
            for f in files:
                assert f.sha256 is not None
                if f.sha256 not in self._sent:
                    self._sent.add(f.sha256)
                    sources[f.sha256] = f
            try:
                lacking = set(await self._client.missing_blobs(list(sources))) if sources else set()
                missing = [(sha, f.size) for sha, f in sources.items() if sha in lacking]
                # one after the other: the concurrency is across runs, in `_upload_all`
                for job in _upload_jobs(self._client, missing, lambda sha: sources[sha].path):
                    await job()
            except (PVCError, OSError) as exc:
                self._failures.append(exc)
                return
            self._meter.add(sum(f.size for f in files), len(files))
        finally:
            slots.release()


def _hash_run(run: list[_File]) -> None:
    for f in run:
        f.sha256 = sha256_file(f.path)


def _upload_jobs(client: Store, missing: list[tuple[str, int]], path_of: Callable[[str], Path],
                 meter: _Meter | None = None) -> list[Callable[[], Awaitable[None]]]:
    """The uploads of ``missing`` (sha, size), in order: small ones in packs, then each large one alone."""

    def upload(sha: str, size: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            path = path_of(sha)
            try:
                await client.upload_blob(sha, path)
            except InvalidInput as exc:
                if exc.status is None:
                    raise
                raise InvalidInput(f"{path}: changed since it was scanned? ({exc})", status=exc.status) from exc
            if meter is not None:
                meter.add(size, 1)
        return job

    def upload_pack(pack: list[tuple[str, int]]) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            await client.upload_pack([(sha, path_of(sha), size) for sha, size in pack])
            if meter is not None:
                meter.add(sum(size for _, size in pack), len(pack))
        return job

    small, large = _split_by_size(missing)
    return [upload_pack(pack) for pack in plan_packs(small)] + [upload(sha, size) for sha, size in large]


async def publish_manifest(
    client: Store,
    pri: str,
    manifest: list[JSON],
    sources: dict[str, tuple[Path, int]],
    *,
    dependencies: Sequence[str],
    labels: Sequence[str] = (),
    message: str = "",
    author: str | None = None,
    at: TimeArg = None,
    progress: Progress | None = None,
    workspace: JSON | None = None,
) -> JSON:
    """Upload the blobs of ``sources`` (sha -> (file, size)) the store lacks, then publish ``manifest``.

    For a caller that hashed already (a mount's output). The files are read
    again as they are sent: a file changed since it was hashed is refused by
    the store, and nothing is published. ``workspace`` (``{"name",
    "revision"}``) is the workspace revision it was made in (`PVCClient.publish`).
    """
    _check_publish(pri, dependencies, labels, at, workspace)
    # In the manifest's order (by path), not the store's answer's (by hash): the store keeps a
    # batch's small blobs together in the order they come, and a directory's files are then read
    # back in one piece.
    lacking = set(await client.missing_blobs(list(sources)))
    missing = list(dict.fromkeys([*(e["sha256"] for e in manifest if e.get("sha256") in lacking),
                                  *(sha for sha in sources if sha in lacking)]))
    meter = _Meter(sum(sources[sha][1] for sha in missing), len(missing), progress)
    meter.add(0)
    jobs = _upload_jobs(client, [(sha, sources[sha][1]) for sha in missing], lambda sha: sources[sha][0], meter)
    await _run_all(jobs, client.TRANSFER_CONCURRENCY)
    return await client.publish(pri, manifest, dependencies=dependencies, labels=labels, message=message,
                                author=author, at=at, workspace=workspace)
