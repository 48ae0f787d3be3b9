"""Version contents: manifests turned into directory trees, fetched once.

A version is immutable, so its tree is kept in memory for the life of the
mount and on disk under ``CACHE/manifests/<product_id>/<N>-<created_us>.json``
(the creation time makes the key unique across stores: a cache directory
shared by mounts of two services never serves one's manifest for the
other's version with the same product id and number) so that a
restarted daemon (or a render node with a prefetched cache) needs no request.
Every manifest is checked again with `validate_manifest` before use: the
daemon does not trust the service, nor its own disk, to have done it.

A miss may bring companions: other versions the caller expects to need soon
(a snapshot's other choices). Those on disk are read in the same thread hop
as the wanted one; when the wanted one is not on disk, one batch request
fetches it with the companions that are not either. With `behind` set (a
mount's nursery), the wanted one is loaded alone and the companions in a
task of their own: a first access waits for one manifest, and a get of a
companion meanwhile waits for that companion (loaded nearest first, each
made available as soon as it is validated), or for the batch request.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import trio

from pvc_client import Entry, parse_time, syncfs, to_micros, validate_manifest

from ..stats import Stats
from ._coalesce import Coalescer

log = logging.getLogger(__name__)

__all__ = ["VersionTree", "VersionStore", "Want"]

_MODES: dict[int, int] = {}

# fetch(pri, number) -> Version JSON (docs/api.md)
Fetcher = Callable[[str, int], Awaitable[dict]]
# fetch_many([(pri, number), ...]) -> the Version JSON of each in order, None for an unknown one
ManyFetcher = Callable[[list[tuple[str, int]]], Awaitable[list[dict | None]]]


class Want(NamedTuple):
    """A version to load, and what finds it on disk (0: not known, not looked for there)."""

    pri: str
    number: int
    product_id: int = 0
    created_us: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return self.pri, self.number


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
    def __init__(self, fetch: Fetcher, cache_dir: str | os.PathLike | None, stats: Stats | None = None,
                 fetch_many: ManyFetcher | None = None) -> None:
        self._fetch = fetch
        self._fetch_many = fetch_many
        self._dir = Path(cache_dir, "manifests") if cache_dir is not None else None
        self._trees: dict[tuple[str, int], VersionTree] = {}
        # None settles a companion that a batch did not load: its waiters load it themselves
        self._loading: Coalescer[VersionTree | None] = Coalescer()
        self._batch_failures = 0
        self.stats = stats or Stats()
        # runs work an answer need not wait for (a nursery's start_soon); None: do it before answering
        self.behind: Callable[..., None] | None = None

    def peek(self, pri: str, number: int) -> VersionTree | None:
        return self._trees.get((pri, number))

    def known(self, pri: str, number: int) -> bool:
        """Loaded or being loaded: no use asking for it as a companion."""
        return (pri, number) in self._trees or self._loading.in_flight((pri, number))

    def _disk_path(self, product_id: int, number: int, created_us: int) -> Path | None:
        if self._dir is None or not product_id or not created_us:
            return None
        return self._dir / str(product_id) / f"{number}-{created_us}.json"

    async def get(self, pri: str, number: int, product_id: int = 0, created_us: int = 0,
                  companions: Iterable[Want] = ()) -> VersionTree:
        """The tree of ``pri@number``; a miss loads ``companions`` along (see the module's doc)."""
        want = Want(pri, number, product_id, created_us)
        while True:
            tree = self._trees.get(want.key)
            if tree is not None:
                return tree
            tree = await self._loading.run(want.key, lambda: self._load(want, companions))
            if tree is not None:
                return tree
            # it was a batch's companion, and the batch did not load it: load it now

    async def _load(self, want: Want, companions: Iterable[Want]) -> VersionTree:
        # take the companions no one holds or loads, so that their gets wait for this one
        mine = [c for c in dict.fromkeys(companions)
                if c.key != want.key and c.key not in self._trees and self._loading.claim(c.key)]
        if mine and self.behind is not None:
            # The wanted one alone, the companions behind it: a first access waits for one
            # manifest, not a hundred (their gets wait for them, as claimed).
            try:
                self.behind(self._load_companions, mine)
            except BaseException:
                for c in mine:
                    self._loading.settle(c.key)
                raise
            tree = (await self._read([want])).get(want.key)
            return tree if tree is not None else await self._fetch_and_keep(want, [])
        try:
            found = await self._read([want, *mine])
            tree = found.get(want.key)
            if tree is None:
                tree = await self._fetch_and_keep(want, [c for c in mine if c.key not in found])
            return tree
        finally:
            for c in mine:
                self._loading.settle(c.key, self._trees.get(c.key))

    async def _load_companions(self, mine: list[Want]) -> None:
        """(A task of `behind`.) Load claimed companions, from disk, else in one batch; settle them all.

        Those on disk are read in a worker thread a few files at a time (4, 8, 16, then
        32) but decoded and validated here, one at a time, nearest first, each settled at
        once: the work is Python, which a thread cannot run beside the loop, and in a
        thread it held the loop (and the lookups waiting on it) for its whole run, 60-100
        ms for a hundred manifests."""
        settled: set[tuple[str, int]] = set()
        try:
            paths = [(w, path) for w in mine if (path := self._disk_path(w.product_id, w.number, w.created_us))]
            for chunk in _growing_chunks(paths):
                for want, data in (await trio.to_thread.run_sync(_read_raw, chunk)).items():
                    tree = _parse_tree(want, data)
                    if tree is not None:
                        self._trees[want.key] = tree
                        self._loading.settle(want.key, tree)
                        settled.add(want.key)
                    await trio.sleep(0)
            rest = [c for c in mine if c.key not in settled]
            if rest and self._fetch_many is not None:
                answers = await self._fetch_batch(rest)
                if answers is not None:
                    fetched = [(w, data) for w, data in zip(rest, answers) if data is not None]
                    self.stats.manifests_fetched += len(fetched)
                    trees, _ = await trio.to_thread.run_sync(self._adopt, fetched, False)
                    self._trees.update(trees)
        except Exception as exc:  # noqa: BLE001 - a guess that failed: each one's get loads it alone
            log.info("loading %d manifests along failed (%s): each is loaded when asked for", len(mine), exc)
        finally:
            for c in mine:
                if c.key not in settled:
                    self._loading.settle(c.key, self._trees.get(c.key))

    async def _read(self, wants: Sequence[Want]) -> dict[tuple[str, int], VersionTree]:
        """The trees of those of ``wants`` on disk, kept: one thread hop for them all."""
        paths = [(w, path) for w in wants if (path := self._disk_path(w.product_id, w.number, w.created_us))]
        if not paths:
            return {}
        found = await trio.to_thread.run_sync(_read_trees, paths)
        self._trees.update(found)
        return found

    async def _fetch_and_keep(self, want: Want, companions: list[Want]) -> VersionTree:
        """Fetch ``want`` (with ``companions`` in one request, when there are any), validate,
        keep in memory and on disk: one thread hop for them all."""
        wants = [want, *companions]
        answers = await self._fetch_batch(wants) if companions and self._fetch_many is not None else None
        if answers is None or answers[0] is None:
            # no batch, or it failed (or did not find the wanted one: the single GET says why)
            answers = [await self._fetch(want.pri, want.number), *(answers or [])[1:]]
            self.stats.manifest_requests += 1
        fetched = [(w, data) for w, data in zip(wants, answers) if data is not None]
        self.stats.manifests_fetched += len(fetched)
        trees, error = await trio.to_thread.run_sync(self._adopt, fetched)
        self._trees.update(trees)
        if error is not None:
            raise error
        return trees[want.key]

    async def _fetch_batch(self, wants: list[Want]) -> list[dict | None] | None:
        """The answers of one batch request, or None when it failed (logged once at info)."""
        assert self._fetch_many is not None
        try:
            answers = await self._fetch_many([w.key for w in wants])
        except Exception as exc:  # the wanted one is not lost: the caller asks for it alone
            self._batch_failures += 1
            log.log(logging.INFO if self._batch_failures == 1 else logging.DEBUG,
                    "fetching %d manifests at once failed (%s): each is fetched alone when asked for%s",
                    len(wants), exc, "" if self._batch_failures > 1 else " (later failures logged at debug)")
            return None
        self.stats.manifest_requests += 1
        if len(answers) != len(wants) or not all(_answers(w, data) for w, data in zip(wants, answers)):
            log.warning("a batch of %d manifests answered others than asked: each is fetched alone when asked for",
                        len(wants))
            return None
        return answers

    def _adopt(self, fetched: list[tuple[Want, dict]], wanted_first: bool = True
               ) -> tuple[dict[tuple[str, int], VersionTree], Exception | None]:
        """(In a worker thread.) The trees of fetched Versions, written to disk; and the error
        of the first one (the wanted one, if ``wanted_first``) if it is unusable. A bad
        companion is left out."""
        trees: dict[tuple[str, int], VersionTree] = {}
        error: Exception | None = None
        written = False
        for i, (want, data) in enumerate(fetched):
            try:
                tree = _tree(want, data)
            except Exception as exc:
                if i == 0 and wanted_first:
                    error = exc
                    break
                log.warning("manifest of %s@%d unusable (%s): left out", want.pri, want.number, exc)
                continue
            trees[want.key] = tree
            disk = self._disk_path(want.product_id or tree.product_id, want.number,
                                   want.created_us or tree.created_us)
            if disk is not None:
                try:
                    _write_atomic(disk, json.dumps(data).encode())
                    written = True
                except OSError as exc:
                    log.warning("cannot cache manifest %s: %s", disk, exc)
        if written and self._dir is not None:
            # one sync for the batch, not an fsync a file: a snapshot's first miss writes a hundred
            try:
                syncfs(self._dir)
            except OSError as exc:
                log.warning("cannot sync the manifest cache: %s", exc)
        return trees, error

    def rename(self, old: str, new: str) -> None:
        for (pri, n), tree in list(self._trees.items()):
            if pri == old:
                del self._trees[(pri, n)]
                tree.pri = new
                self._trees[(new, n)] = tree


def _answers(want: Want, data: dict | None) -> bool:
    """Whether a batch's answer is (None or) the version asked: a batch answers in order."""
    if data is None:
        return True
    if not isinstance(data, dict) or data.get("number") != want.number:
        return False
    return not want.product_id or data.get("product_id") == want.product_id


def _tree(want: Want, data: dict) -> VersionTree:
    tree = VersionTree.from_json(data)
    tree.pri = want.pri  # keyed by the canonical name the caller knows (the cached file may hold an older one)
    return tree


def _growing_chunks(paths: list[tuple[Want, Path]], first: int = 4, most: int = 32
                    ) -> Iterable[list[tuple[Want, Path]]]:
    """``paths`` in runs of ``first``, twice that, ... up to ``most``: the nearest read soon, the
    rest in few thread hops."""
    start, size = 0, first
    while start < len(paths):
        yield paths[start:start + size]
        start, size = start + size, min(2 * size, most)


def _read_trees(paths: list[tuple[Want, Path]]) -> dict[tuple[str, int], VersionTree]:
    """(In a worker thread.) The trees of the cached manifests that are there and usable."""
    found: dict[tuple[str, int], VersionTree] = {}
    for want, data in _read_raw(paths).items():
        tree = _parse_tree(want, data)
        if tree is not None:
            found[want.key] = tree
    return found


def _read_raw(paths: list[tuple[Want, Path]]) -> dict[Want, tuple[Path, bytes]]:
    """(In a worker thread.) The bytes of the cached manifests that are there."""
    found: dict[Want, tuple[Path, bytes]] = {}
    for want, path in paths:
        try:
            found[want] = (path, path.read_bytes())
        except FileNotFoundError:
            pass
        except OSError as exc:  # an unreadable cache file is refetched, not fatal
            log.warning("manifest cache %s unusable (%s): refetching", path, exc)
    return found


def _parse_tree(want: Want, data: tuple[Path, bytes]) -> VersionTree | None:
    """The tree of a cached manifest's bytes, or None (logged) if they are not a usable manifest."""
    path, raw = data
    try:
        return _tree(want, json.loads(raw))
    except Exception as exc:  # a damaged cache file is refetched, not fatal
        log.warning("manifest cache %s unusable (%s): refetching", path, exc)
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    # Not synced here: the caller syncs a batch's files at once. A file a crash cut short fails
    # its validation when read, and is fetched again.
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
