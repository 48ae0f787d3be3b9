"""Version contents: manifests turned into directory trees, fetched once.

A version is immutable, so its tree is kept in memory for the life of the
mount and on disk under ``CACHE/manifests/<product_id>/<N>-<created_us>.json``
(the creation time makes the key unique across stores: a cache directory
shared by mounts of two services never serves one's manifest for the
other's version with the same product id and number) so that a
restarted daemon (or a render node with a prefetched cache) needs no request.
Every manifest is checked again with `validate_manifest` before use: the
daemon does not trust the service, nor its own disk, to have done it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from pvc_client import Entry, parse_time, to_micros, validate_manifest

from ..stats import Stats
from ._coalesce import Coalescer

log = logging.getLogger(__name__)

__all__ = ["VersionTree", "VersionStore"]

_MODES: dict[int, int] = {}

# fetch(pri, number) -> Version JSON (docs/api.md)
Fetcher = Callable[[str, int], Awaitable[dict]]


class VersionTree:
    """One version's files: every entry by path, and each directory's entries in name order.

    Entries are found by their full path (the string the manifest entry
    already holds) rather than by name within a directory dict: no second
    string per entry, which a mount serving millions of files pays for.
    """

    __slots__ = ("pri", "number", "product_id", "created_us", "paths", "lists", "files", "bytes")

    def __init__(self, pri: str, number: int, product_id: int, created_us: int, entries: list[Entry]) -> None:
        self.pri = pri
        self.number = number
        self.product_id = product_id
        self.created_us = created_us
        self.paths: dict[str, Entry] = {}
        self.lists: dict[str, list[Entry]] = {"": []}
        self.files = 0
        self.bytes = 0
        for e in entries:  # sorted by path, parents first: each list comes out in name order
            if e.type == "dir":
                self.lists[e.path] = []
            self.paths[e.path] = e
            self.lists[e.path.rpartition("/")[0]].append(e)
            if e.type == "file":
                self.files += 1
                self.bytes += e.size

    @property
    def ref(self) -> str:
        return f"{self.pri}@{self.number}"

    def listing(self, path: str) -> list[Entry] | None:
        """The entries of directory ``path`` ("" for the top) in name order; None if not a directory."""
        return self.lists.get(path)

    def child(self, path: str, name: str) -> Entry | None:
        return self.paths.get(f"{path}/{name}" if path else name)

    def children(self, path: str) -> dict[str, Entry] | None:
        entries = self.lists.get(path)
        return None if entries is None else {e.path.rpartition("/")[2]: e for e in entries}

    @property
    def dirs(self) -> dict[str, dict[str, Entry]]:
        """directory path -> {name: Entry} (built on demand; for inspection, not the hot path)."""
        return {d: self.children(d) or {} for d in self.lists}

    def entry(self, path: str) -> Entry | None:
        return self.paths.get(path)

    def iter_files(self):
        for e in self.paths.values():
            if e.type == "file":
                yield e

    @classmethod
    def from_json(cls, data: dict) -> VersionTree:
        raw = data.get("manifest", [])
        if isinstance(raw, list):
            # One int object per distinct mode instead of one per entry (JSON
            # parsing boxes each): 32 bytes a file on a mount serving millions.
            for item in raw:
                mode = item.get("mode") if isinstance(item, dict) else None
                if type(mode) is int and 0 <= mode <= 0o7777:
                    item["mode"] = _MODES.setdefault(mode, mode)
        entries = validate_manifest(raw)
        return cls(
            data["pri"],
            int(data["number"]),
            int(data.get("product_id", 0)),
            to_micros(parse_time(data["created_at"])),
            entries,
        )


class VersionStore:
    def __init__(self, fetch: Fetcher, cache_dir: str | os.PathLike | None, stats: Stats | None = None) -> None:
        self._fetch = fetch
        self._dir = Path(cache_dir, "manifests") if cache_dir is not None else None
        self._trees: dict[tuple[str, int], VersionTree] = {}
        self._loading: Coalescer[VersionTree] = Coalescer()
        self.stats = stats or Stats()

    def peek(self, pri: str, number: int) -> VersionTree | None:
        return self._trees.get((pri, number))

    def _disk_path(self, product_id: int, number: int, created_us: int) -> Path | None:
        if self._dir is None or not product_id or not created_us:
            return None
        return self._dir / str(product_id) / f"{number}-{created_us}.json"

    async def get(self, pri: str, number: int, product_id: int = 0, created_us: int = 0) -> VersionTree:
        tree = self._trees.get((pri, number))
        if tree is not None:
            return tree
        return await self._loading.run((pri, number), lambda: self._load(pri, number, product_id, created_us))

    async def _load(self, pri: str, number: int, product_id: int, created_us: int) -> VersionTree:
        disk = self._disk_path(product_id, number, created_us)
        data = None
        if disk is not None and disk.exists():
            try:
                raw = await trio.to_thread.run_sync(disk.read_bytes)
                data = json.loads(raw)
                tree = VersionTree.from_json(data)
                self._trees[(pri, number)] = tree
                return tree
            except Exception as exc:  # a damaged cache file is refetched, not fatal
                log.warning("manifest cache %s unusable (%s): refetching", disk, exc)
        data = await self._fetch(pri, number)
        self.stats.manifests_fetched += 1
        tree = VersionTree.from_json(data)
        tree.pri = pri  # keyed by the canonical name the caller knows
        self._trees[(pri, number)] = tree
        disk = self._disk_path(product_id or tree.product_id, number, created_us or tree.created_us)
        if disk is not None:
            try:
                await trio.to_thread.run_sync(_write_atomic, disk, json.dumps(data).encode())
            except OSError as exc:
                log.warning("cannot cache manifest %s: %s", disk, exc)
        return tree

    def rename(self, old: str, new: str) -> None:
        for (pri, n), tree in list(self._trees.items()):
            if pri == old:
                del self._trees[(pri, n)]
                tree.pri = new
                self._trees[(new, n)] = tree


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
