"""Filling a cache ahead of a job: every manifest and payload of a snapshot's choices.

A render node prefetches before its job starts, so that the job's mounts find
everything local and can start offline: the snapshot's context (its record and
the index as of its pin) is saved as a mount of it saves it. The manifests
come in one batch request, small payloads a pack at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from pvc_client import PACK_BLOB_LIMIT, PVCClient, plan_packs

from ..resolution import Graph
from .blob_cache import BlobCache
from .offline import SavedContexts, snapshot_key
from .versions import VersionStore, VersionTree, Want

__all__ = ["prefetch"]


async def prefetch(
    client: PVCClient,
    snapshot: dict,
    cache_dir: str,
    *,
    progress: Callable[[int, int, int, int], None] | None = None,
    parallel: int = 8,
) -> dict:
    """Fetch every manifest and payload of a snapshot's choices into ``cache_dir``.

    Returns what was done: versions, files, bytes needed, bytes fetched.
    """
    record = snapshot["record"]
    # the snapshot's products alone (each choice is named exactly), not the store
    index = await client.closure(sorted(record["choices"]), as_of=record["context"]["pin"], depth=0, missing="omit")
    graph = Graph.from_json(index)
    saved = SavedContexts(cache_dir)
    await trio.to_thread.run_sync(saved.save, snapshot_key(snapshot["id"]), {"snapshot": snapshot, "index": index})
    versions = VersionStore(client.get_version, cache_dir,
                            fetch_many=lambda refs: client.get_versions(refs, missing="omit"))
    blobs = BlobCache(cache_dir, client.download_blob, download_pack=client.download_pack)
    wants: list[Want] = []
    for pri, number in sorted(record["choices"].items()):
        product = graph.get(pri)
        version = product.versions.get(number) if product else None
        wants.append(Want(product.pri if product else pri, number, product.product_id if product else 0,
                          version.created_us if version else 0))
    trees: list[VersionTree] = []
    for want in wants:
        # the first miss brings the others along: the manifests in one request (or a few), not one each
        trees.append(await versions.get(*want, companions=wants))
    wanted: dict[str, int] = {}
    for tree in trees:
        for e in tree.iter_files():
            if e.size:
                wanted[e.sha256] = e.size  # type: ignore[index]
    total = sum(wanted.values())
    done = done_files = 0
    limiter = trio.Semaphore(parallel)

    async def some(group: list[tuple[str, int]]) -> None:
        # small payloads come a pack at a time; `ensure` then checks each one (or
        # fetches it alone: a large one, or one a failed pack did not bring)
        nonlocal done, done_files
        async with limiter:
            if len(group) > 1:
                await blobs.try_fetch_many(group)
            for sha, size in group:
                await blobs.ensure(sha, size)
                done += size
                done_files += 1
                if progress:
                    progress(done, total, done_files, len(wanted))

    # In the versions' own order (each one's files by path), not by hash: a
    # version's small payloads were stored together, and read back in that
    # order they are one read at the service rather than one per payload.
    small = [(sha, size) for sha, size in wanted.items() if size <= PACK_BLOB_LIMIT]
    large = [[(sha, size)] for sha, size in wanted.items() if size > PACK_BLOB_LIMIT]
    try:
        async with trio.open_nursery() as nursery:
            for group in [*plan_packs(small), *large]:
                nursery.start_soon(some, group)
    finally:
        blobs.close()  # records what was fetched in the ledger: the mounts that follow trust it
    return {
        "snapshot": snapshot["id"], "versions": len(trees), "manifest_requests": versions.stats.manifest_requests,
        "files": sum(t.files for t in trees),
        "blobs": len(wanted), "bytes": total, "bytes_fetched": blobs.stats.bytes_fetched,
        "blobs_fetched": blobs.stats.blobs_fetched, "cache": blobs.usage(),
    }
