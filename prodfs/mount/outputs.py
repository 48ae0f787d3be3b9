"""Workspace outputs: the writable directories of a workspace mount (docs/outputs.md).

A workspace names output products; in a mount of it, ``<mnt>/PRI/`` of an
output is that product's scratch tree (`prodfs.storage.scratch`), started
from the version the mount resolves for it (nothing copied) or empty for a
new product. Everything else stays read-only.

Inode numbers: ``OUTPUT_BIT | slot << 40 | item id``, where the slot is the
output's place in this mount and the item id is the tree's own row id, so
an inode stays the same for the life of the mount whatever is renamed.

This class holds the logic (which names are outputs, starting trees, the
record of inputs served, publishing); `prodfs.mount.fs` only turns its
answers into FUSE replies. No pyfuse3 here.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from pvc_client import InvalidInput, normalize_manifest, parse_pri, sha256_file

from ..storage.scratch import ROOT_ID, Item, ScratchBusy, ScratchTree, tree_dir
from .namespace import FsError
from .state import MountState, View

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_BIT", "Outputs", "Output"]

OUTPUT_BIT = 1 << 59  # below the handle tags of prodfs.kernel (1 << 61, 1 << 62)
_SLOT_SHIFT = 40
_ID_MASK = (1 << _SLOT_SHIFT) - 1


@dataclass
class Output:
    """One output product in this mount."""

    pri: str
    slot: int
    tree: ScratchTree
    # modifications wait while a publish reads the tree
    lock: trio.Lock = field(default_factory=trio.Lock)
    used: dict[str, int] = field(default_factory=dict)

    def ino(self, item_id: int) -> int:
        return OUTPUT_BIT | self.slot << _SLOT_SHIFT | item_id

    @property
    def root_ino(self) -> int:
        return self.ino(ROOT_ID)


class Outputs:
    """The outputs of the workspace a mount serves, and their trees under ``scratch``."""

    def __init__(self, scratch: Path, state: MountState, base_entries: Callable) -> None:
        self.scratch = scratch
        self.state = state
        # async (View) -> list[Entry]: the manifest of the version an output starts from
        self._base_entries = base_entries
        self.workspace: str | None = None
        self.revision: int | None = None
        self.declared: tuple[str, ...] = ()
        self._by_pri: dict[str, Output] = {}
        self._slots: list[Output | None] = [None]  # slot 0 unused: an output ino is never OUTPUT_BIT alone
        self._busy: dict[str, str] = {}  # pri -> why it is read-only here
        self._served: dict[str, int] = {}  # every input version this mount served: pri -> number
        self._starting: dict[str, trio.Event] = {}

    # -- which names ---------------------------------------------------------
    def set_workspace(self, record: dict | None) -> set[str]:
        """The workspace record (mount start, or a new revision): returns the output PRIs that changed."""
        if record is None:
            return set()
        self.workspace = record["name"]
        self.revision = record.get("revision")
        old = set(self.declared)
        self.declared = tuple(dict.fromkeys(str(parse_pri(p)) for p in record.get("outputs") or ()))
        for pri in old - set(self.declared):
            out = self._by_pri.pop(pri, None)
            if out is not None:  # no longer an output: the tree stays on disk, the name serves the version
                log.info("%s is no longer an output of workspace %s: its tree is kept in %s",
                         pri, self.workspace, out.tree.path)
        return old ^ set(self.declared)

    def output_name(self, name: str) -> str | None:
        """The output PRI a root name stands for, or None.

        Only the canonical spelling: an older name of the product leads to its version,
        read-only, since one directory inode must never be reached through two names
        (the kernel refuses directory aliases)."""
        return name if name in self.declared else None

    def owns(self, ino: int) -> bool:
        return bool(ino & OUTPUT_BIT)

    def split(self, ino: int) -> tuple[Output, int]:
        slot = (ino & ~OUTPUT_BIT) >> _SLOT_SHIFT
        out = self._slots[slot] if 0 < slot < len(self._slots) else None
        if out is None or self._by_pri.get(out.pri) is not out:
            raise FsError(errno.ENOENT, f"stale output inode {ino:#x}")
        return out, ino & _ID_MASK

    def item(self, ino: int) -> tuple[Output, Item]:
        out, item_id = self.split(ino)
        item = out.tree.get(item_id)
        if item is None:
            raise FsError(errno.ENOENT, f"{out.pri}: item {item_id} is gone", quiet=True)
        return out, item

    # -- starting ------------------------------------------------------------
    async def open(self, pri: str) -> Output | None:
        """The output ``pri`` in this mount, its tree started if it was not; None if another mount holds it."""
        out = self._by_pri.get(pri)
        if out is not None:
            return out
        if pri in self._busy:
            return None
        waiting = self._starting.get(pri)
        if waiting is not None:
            await waiting.wait()
            return self._by_pri.get(pri)
        self._starting[pri] = done = trio.Event()
        try:
            return await self._open(pri)
        finally:
            del self._starting[pri]
            done.set()

    async def _open(self, pri: str) -> Output | None:
        assert self.workspace is not None
        path = tree_dir(self.scratch, self.workspace, pri)
        try:
            tree = ScratchTree(path)  # its connection belongs to this thread (see ScratchTree.copy_payload)
        except ScratchBusy as exc:
            self._busy[pri] = str(exc)
            log.warning("output %s is served read-only here: %s", pri, exc)
            return None
        if not tree.started:
            view = self._base_view(pri)
            entries = await self._base_entries(view) if view is not None else []
            mtime_ns = view.created_us * 1000 if view is not None else time.time_ns()
            tree.start(pri, view.number if view else None, entries, mtime_ns)  # one transaction, on this thread
            log.info("output %s of workspace %s started from %s in %s", pri, self.workspace,
                     view.ref if view else "nothing (a new product)", path)
        out = Output(pri, len(self._slots), tree, used=tree.used())
        self._slots.append(out)
        self._by_pri[pri] = out
        for served_pri, number in self._served.items():  # what this mount served before the output was opened
            self._note(out, served_pri, number)
        return out

    def _base_view(self, pri: str) -> View | None:
        try:
            return self.state.view(pri)
        except Exception as exc:  # noqa: BLE001 - no visible version (a new product): start empty
            log.debug("output %s has no version to start from: %s", pri, exc)
            return None

    def free_bytes(self) -> int:
        try:
            st = os.statvfs(self.scratch if self.scratch.exists() else self.scratch.parent)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def busy_reason(self, pri: str) -> str | None:
        return self._busy.get(pri)

    def opened(self) -> Iterable[Output]:
        return list(self._by_pri.values())

    # -- what was read -------------------------------------------------------
    def served(self, view: View) -> None:
        """The mount served ``view`` (a lookup or listing in it): an input of every open output."""
        if self._served.get(view.pri) == view.number:
            return
        self._served[view.pri] = view.number
        for out in self._by_pri.values():
            self._note(out, view.pri, view.number)

    def _note(self, out: Output, pri: str, number: int) -> None:
        if pri == out.pri or out.used.get(pri) == number:
            return  # an output is not an input of itself (its versions read by @N included)
        out.used[pri] = number
        out.tree.record_use(pri, number)

    # -- publishing ----------------------------------------------------------
    async def manifest(self, out: Output) -> tuple[list[dict], dict[str, tuple[Path, int]]]:
        """The tree as a manifest, and the written files' bytes by hash.

        The rows are read on this thread (the tree's connection stays on it); only
        the hashing of written files goes to a worker thread.
        """
        tree = out.tree
        items = list(tree.walk())
        written = [(path, tree.data_path(item.id)) for path, item in items if item.written]
        hashed = dict(zip((p for p, _ in written),
                          await trio.to_thread.run_sync(lambda: [_hash_file(d) for _, d in written])))
        entries: list[dict] = []
        sources: dict[str, tuple[Path, int]] = {}
        for path, item in items:
            if item.type == "dir":
                entries.append({"path": path, "type": "dir", "mode": item.mode})
            elif item.type == "symlink":
                entries.append({"path": path, "type": "symlink", "mode": 0o777, "target": item.target})
            elif item.written:
                sha, size = hashed[path]
                sources.setdefault(sha, (tree.data_path(item.id), size))
                entries.append({"path": path, "type": "file", "mode": item.mode, "size": size, "sha256": sha})
            else:
                entries.append({"path": path, "type": "file", "mode": item.mode, "size": item.size,
                                "sha256": item.sha256})
        try:
            return normalize_manifest(entries), sources
        except InvalidInput as exc:
            raise PublishRefused(f"{out.pri}: the tree cannot be published as it is: {exc}") from None

    def dependencies(self, out: Output) -> list[str]:
        return [f"{pri}@{number}" for pri, number in sorted(out.used.items())]

    def origin(self) -> dict | None:
        if self.workspace is None or self.revision is None:
            return None
        return {"name": self.workspace, "revision": self.revision}


class PublishRefused(Exception):
    """A publish that cannot start (the tree, the arguments): nothing was sent."""


def _hash_file(path: Path) -> tuple[str, int]:
    return sha256_file(path), os.stat(path).st_size  # only the publish hashes: writes wait on its lock
