"""Snapshots: a resolution frozen for render nodes, and filling a cache ahead of a job.

A snapshot record (stored by PVC, which names it by a hash of its content)::

    {"format": 1,
     "context": {... the context, with "pin" always set ...},
     "choices": {"spies:asset:walter-model": 2, ...},   # every product of the graph
     "unresolved": {"spies:...": "why"},                # strict conflicts, errors
     "source": {"workspace": "spies-lgt" | null}}

A mount of it serves exactly ``choices``; any other product resolves as of
the pin by the context's label preference, then the newest version. Nothing
in the record depends on when or where it was made, so the same resolution
always gives the same id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from pvc_client import PACK_BLOB_LIMIT, PVCClient, format_time, from_micros, plan_packs, to_micros, utcnow

from .blob_cache import BlobCache
from .context import Context
from .graph import Graph
from .resolver import Resolution, resolve
from .versions import VersionStore, VersionTree

log = logging.getLogger(__name__)

__all__ = ["snapshot_record", "create_snapshot", "load_graph", "prefetch"]

FORMAT = 1


def snapshot_record(resolution: Resolution, context: Context, *, extra_names: dict[str, int] | None = None,
                    workspace: str | None = None) -> dict[str, Any]:
    """Freeze a resolution. ``context.pin_us`` must be set (the caller pins a live context to now)."""
    if context.pin_us is None:
        raise ValueError("a snapshot needs a pinned context")
    choices: dict[str, int] = {}
    unresolved: dict[str, str] = {}
    for pri, choice in sorted(resolution.choices.items()):
        if choice.number is None:
            unresolved[pri] = choice.conflict.message if choice.conflict else choice.rule
        else:
            choices[pri] = choice.number
    for pri, number in (extra_names or {}).items():
        choices.setdefault(pri, number)
    ctx = context.replace(workspace=None, snapshot=None).to_json()
    return {"format": FORMAT, "context": ctx, "choices": choices, "unresolved": unresolved,
            "source": {"workspace": workspace}}


async def load_graph(client: PVCClient, context: Context) -> Graph:
    as_of = format_time(from_micros(context.pin_us)) if context.pin_us is not None else None
    return Graph.from_json(await client.index(as_of=as_of))


async def create_snapshot(client: PVCClient, context: Context, *, workspace: str | None = None,
                          extra_names: dict[str, int] | None = None) -> dict:
    """Resolve ``context`` (pinned to now when live) and store the snapshot; return PVC's answer."""
    if context.pin_us is None:
        context = context.replace(pin_us=to_micros(utcnow()))
    graph = await load_graph(client, context)
    resolution = resolve(graph, context)
    record = snapshot_record(resolution, context, extra_names=extra_names, workspace=workspace)
    return await client.create_snapshot(record)


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
    graph = Graph.from_json(await client.index(as_of=record["context"]["pin"]))
    versions = VersionStore(client.get_version, cache_dir)
    blobs = BlobCache(cache_dir, client.download_blob, download_pack=client.download_pack)
    trees: list[VersionTree] = []
    for pri, number in sorted(record["choices"].items()):
        product = graph.get(pri)
        version = product.versions.get(number) if product else None
        trees.append(await versions.get(product.pri if product else pri, number,
                                        product.product_id if product else 0,
                                        version.created_us if version else 0))
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

    small = [(sha, size) for sha, size in sorted(wanted.items()) if size <= PACK_BLOB_LIMIT]
    large = [[(sha, size)] for sha, size in sorted(wanted.items()) if size > PACK_BLOB_LIMIT]
    try:
        async with trio.open_nursery() as nursery:
            for group in [*plan_packs(small), *large]:
                nursery.start_soon(some, group)
    finally:
        blobs.close()  # records what was fetched in the ledger: the mounts that follow trust it
    return {
        "snapshot": snapshot["id"], "versions": len(trees), "files": sum(t.files for t in trees),
        "blobs": len(wanted), "bytes": total, "bytes_fetched": blobs.stats.bytes_fetched,
        "blobs_fetched": blobs.stats.blobs_fetched, "cache": blobs.usage(),
    }
