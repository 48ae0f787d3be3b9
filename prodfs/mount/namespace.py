"""The namespace: inode numbers, nodes and their attributes. No pyfuse3 here.

Inode layout:
- 1 the root; 2 ``.prodfs``; 3.. its control files;
- from `FIRST_DYNAMIC` on, allocated on first use and never reused: one per
  (root name, version) for a version's top directory, one per (that top
  directory, path) below it. A given version's file under a given name keeps
  its inode for the life of the mount, and reports the same size and mtime
  forever, so the kernel's page cache stays valid. When a versionless name
  moves to another version it leads to another top inode: files opened
  through the old one keep reading the old version.

Directories are never shared between names (the kernel refuses directory
aliases); that is why the top directory is keyed by the name as spelled.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Awaitable, Callable, Iterator, Sequence
from collections import OrderedDict
from dataclasses import dataclass

from pvc_client import Entry

from .state import ConflictError, MountState, NameError_, Unknown, View
from ..storage import VersionStore, VersionTree, Want

log = logging.getLogger(__name__)

__all__ = ["Node", "Namespace", "FsError", "ROOT", "CONTROL_DIR", "CONTROL_NAME", "not_a_dir"]

ROOT = 1
CONTROL_DIR = 2
CONTROL_NAME = ".prodfs"
CONTROL_FILES = ("context.json", "resolved.json", "stats.json", "conflicts.json", "metrics.prom")
FIRST_DYNAMIC = 16

# node kinds
K_ROOT, K_CTRL_DIR, K_CTRL_FILE, K_TOP, K_DIR, K_FILE, K_LINK, K_CONFLICT, K_NAME = range(9)
# A root listing's entry for a product not learned yet is a K_NAME node: the
# kernel keeps an entry for everything a listing answers (READDIRPLUS), and
# glibc hides inode 0. Answered with no entry timeout, it is looked up (and
# its product learned) before any use; only the newest few are kept.
_NAMES_KEPT = 65536
_KINDS = {"dir": K_DIR, "file": K_FILE, "symlink": K_LINK}


class FsError(Exception):
    """An error for the caller, carrying its errno; logged once where mapped."""

    def __init__(self, errno_: int, message: str, *, quiet: bool = False) -> None:
        super().__init__(message)
        self.errno = errno_
        self.quiet = quiet  # expected (a probe for a missing name): debug log only


@dataclass(slots=True)
class Node:
    ino: int
    kind: int
    view: View | None = None
    entry: Entry | None = None
    name: str = ""  # control file name / conflict message
    top: int = 0  # the ino of the version's top directory this node is in (itself for a top)

    @property
    def path(self) -> str:
        """The path inside the version; "" for the top directory (not a field: 16 bytes a node)."""
        return self.entry.path if self.entry is not None else ""

    @property
    def is_dir(self) -> bool:
        return self.kind in (K_ROOT, K_CTRL_DIR, K_TOP, K_DIR)


class Namespace:
    def __init__(self, state: MountState, versions: VersionStore) -> None:
        self.state = state
        self.versions = versions
        # ino -> node. A list, not a dict: inode numbers are allocated in
        # sequence and never reused, and a mount may serve millions of them
        # (a dict slot and a boxed key cost ~70 bytes a node more).
        self._nodes: list[Node | None] = [None] * FIRST_DYNAMIC
        self._count = 0
        self._keys: dict[tuple, int] = {}  # top directories and conflict nodes
        # top ino -> {path: node} below it; keyed by the path string the
        # manifest entry already holds, so a node costs no key tuple
        self._below: dict[int, dict[str, Node]] = {}
        self._tops: list[Node] = []
        self._names: OrderedDict[str, int] = OrderedDict()  # K_NAME nodes, oldest first
        # told of every version served (a root name resolved, a lookup or listing in it):
        # the inputs of a workspace's outputs (prodfs.mount.outputs)
        self.on_use: Callable[[View], None] | None = None
        # asks the service about a product the state does not know (prodfs.mount.learning)
        self.learn: Callable[[str], Awaitable[None]] | None = None
        # the versions to load along with a version's tree when it is not loaded (a snapshot's)
        self.companions: Callable[[View], Sequence[Want]] | None = None
        self._add(Node(ROOT, K_ROOT))
        self._add(Node(CONTROL_DIR, K_CTRL_DIR))
        for i, name in enumerate(CONTROL_FILES):
            self._add(Node(CONTROL_DIR + 1 + i, K_CTRL_FILE, name=name))
        self._ctrl_by_name = {n.name: n for n in self._nodes if n is not None and n.kind == K_CTRL_FILE}

    # -- table -------------------------------------------------------------
    def _add(self, node: Node) -> Node:
        if node.ino < len(self._nodes):
            self._nodes[node.ino] = node  # the fixed ones, below FIRST_DYNAMIC
        else:
            self._nodes.append(node)
        self._count += 1
        return node

    def _intern(self, key: tuple, make) -> Node:
        ino = self._keys.get(key)
        if ino is not None:
            return self._nodes[ino]  # type: ignore[return-value]
        ino = len(self._nodes)
        self._keys[key] = ino
        return self._add(make(ino))

    def node(self, ino: int) -> Node:
        n = self._nodes[ino] if 0 < ino < len(self._nodes) else None
        if n is None:
            raise FsError(errno.ESTALE if 0 < ino < len(self._nodes) else errno.ENOENT, f"stale inode {ino}")
        return n

    def __len__(self) -> int:
        return self._count

    def top(self, view: View) -> Node:
        key = ("top", view.name, view.pri, view.number)
        ino = self._keys.get(key)
        if ino is None:
            node = self._intern(key, lambda ino: Node(ino, K_TOP, view, top=ino))
            self._tops.append(node)
        else:
            node = self._nodes[ino]  # type: ignore[assignment]
        node.view = view  # same content; the rule that chose it may be new
        return node

    def child(self, parent: Node, entry: Entry) -> Node:
        below = self._below.get(parent.top)
        if below is None:
            below = self._below[parent.top] = {}
        node = below.get(entry.path)
        if node is None:
            node = Node(len(self._nodes), _KINDS[entry.type], parent.view, entry, top=parent.top)
            below[entry.path] = node
            self._add(node)
        return node

    def name_node(self, name: str) -> Node:
        ino = self._names.get(name)
        if ino is not None and (node := self._nodes[ino]) is not None:
            self._names.move_to_end(name)
            return node
        node = self._add(Node(len(self._nodes), K_NAME, name=name))
        self._names[name] = node.ino
        if len(self._names) > _NAMES_KEPT:
            _, old = self._names.popitem(last=False)
            self._nodes[old] = None  # a use of it now is a stale inode (ESTALE: looked up again)
            self._count -= 1
        return node

    def conflict_node(self, name: str, message: str) -> Node:
        node = self._intern(("conflict", name), lambda ino: Node(ino, K_CONFLICT, name=message))
        node.name = message
        return node

    # -- lookups -----------------------------------------------------------
    async def learn_name(self, name: str) -> None:
        """Make the state know the product a root name names (or that none does), if it does not yet."""
        if self.learn is not None and (pri := self.state.unknown_pri(name)) is not None:
            await self.learn(pri)

    def lookup_root(self, name: str) -> Node:
        """A root name's node, from what the state knows (see `learn_name`)."""
        if name == CONTROL_NAME:
            return self._nodes[CONTROL_DIR]
        try:
            view = self.state.view(name)
        except NameError_ as exc:
            if exc.malformed:
                raise FsError(errno.EINVAL, str(exc)) from None
            raise FsError(errno.ENOENT, str(exc), quiet=True) from None
        except ConflictError as exc:
            raise FsError(errno.EIO, f"{name}: unresolved conflict: {exc}") from None
        self.state.record_use(view, resolved=True)
        if self.on_use is not None:
            self.on_use(view)
        return self.top(view)

    async def tree(self, node: Node) -> VersionTree:
        v = node.view
        assert v is not None
        tree = self.versions.peek(v.pri, v.number)
        if tree is not None:  # the usual case: no companions to choose
            return tree
        companions = self.companions(v) if self.companions is not None else ()
        return await self.versions.get(v.pri, v.number, v.product_id, v.created_us, companions)

    async def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self.node(parent_ino)
        if parent.kind == K_ROOT:
            await self.learn_name(name)
            return self.lookup_root(name)
        if parent.kind == K_CTRL_DIR:
            node = self._ctrl_by_name.get(name)
            if node is None:
                raise FsError(errno.ENOENT, f"{CONTROL_NAME}/{name}: no such control file", quiet=True)
            return node
        if parent.kind not in (K_TOP, K_DIR):
            raise not_a_dir(parent)
        tree = await self.tree(parent)
        self._used(parent.view)  # type: ignore[arg-type]
        entry = tree.child(parent.path, name)
        if entry is None:
            raise FsError(errno.ENOENT, f"{parent.view.name}/{_join(parent.path, name)}: no such entry", quiet=True)  # type: ignore[union-attr]
        return self.child(parent, entry)

    def root_entry(self, name: str) -> Node | None:
        """The node a root listing shows for ``name`` (a K_NAME node when its product is
        not known yet); None when it is not to be listed (nothing visible)."""
        try:
            return self.top(self.state.view(name))
        except ConflictError as exc:
            return self.conflict_node(name, str(exc))
        except Unknown:
            return self.name_node(name)
        except NameError_:
            return None

    async def listing(self, ino: int) -> list[tuple[str, Node]]:
        """Directory entries (without . and ..), in a stable order; the root's are in `root_entry`."""
        node = self.node(ino)
        if node.kind == K_ROOT:
            raise FsError(errno.EIO, "the root is listed in pages (prodfs.mount.root_listing)")
        if node.kind == K_CTRL_DIR:
            return [(n, self._ctrl_by_name[n]) for n in CONTROL_FILES]
        if node.kind not in (K_TOP, K_DIR):
            raise not_a_dir(node)
        tree = await self.tree(node)
        self._used(node.view)  # type: ignore[arg-type]
        return self._entries(node, tree)

    def loaded_listing(self, ino: int, limit: int) -> list[tuple[str, Node]] | None:
        """The first ``limit`` entries of `listing` of a version directory whose version is
        loaded already; None, without waiting, if it is not. Nodes are made for those only:
        a lookup handler calls this, and a directory may hold many thousands."""
        node = self.node(ino)
        if node.kind not in (K_TOP, K_DIR) or node.view is None:
            return None
        tree = self.versions.peek(node.view.pri, node.view.number)
        return None if tree is None else self._entries(node, tree, limit)

    def _entries(self, node: Node, tree: VersionTree, limit: int | None = None) -> list[tuple[str, Node]]:
        return [(e.path.rpartition("/")[2], self.child(node, e)) for e in (tree.listing(node.path) or [])[:limit]]

    def _used(self, view: View) -> None:
        self.state.record_use(view)
        if self.on_use is not None:
            self.on_use(view)

    async def neighbours(self, node: Node) -> list[Entry]:
        """The entries of the directory a version's file is in (the file among them)."""
        tree = await self.tree(self.node(node.top))
        return tree.listing(node.path.rpartition("/")[0]) or []

    # -- attributes --------------------------------------------------------
    def mode(self, node: Node) -> int:
        if node.kind in (K_ROOT, K_CTRL_DIR, K_TOP, K_NAME):
            return stat.S_IFDIR | 0o555
        if node.kind == K_CTRL_FILE:
            return stat.S_IFREG | 0o444
        if node.kind == K_CONFLICT:
            return stat.S_IFDIR | 0o000
        e = node.entry
        assert e is not None
        if e.type == "dir":
            return stat.S_IFDIR | e.mode
        if e.type == "symlink":
            return stat.S_IFLNK | 0o777
        return stat.S_IFREG | e.mode

    def size(self, node: Node) -> int:
        e = node.entry
        if e is None:
            return 0
        if e.type == "file":
            return e.size
        if e.type == "symlink":
            return len(e.target.encode())  # type: ignore[union-attr]
        return 0

    def mtime_us(self, node: Node) -> int | None:
        """The version's creation time for version content; None for the synthetic nodes."""
        return node.view.created_us if node.view is not None else None

    def xattrs(self, node: Node) -> dict[str, bytes]:
        v = node.view
        if v is None:
            if node.kind == K_ROOT:
                return {"user.prodfs.context": self.state.context.describe().encode()}
            if node.kind == K_CONFLICT:
                return {"user.prodfs.conflict": node.name.encode()}
            return {}
        out = {
            "user.prodfs.pri": v.ref.encode(),
            "user.prodfs.version": str(v.number).encode(),
            "user.prodfs.resolved_by": v.kind.encode(),
            "user.prodfs.rule": v.rule.encode(),
            "user.prodfs.name": v.name.encode(),
        }
        choice = self.state.choice(v.pri)
        if choice is not None and choice.conflict is not None:
            out["user.prodfs.conflict"] = choice.conflict.message.encode()
        if node.entry is not None and node.entry.type == "file":
            out["user.prodfs.sha256"] = node.entry.sha256.encode()  # type: ignore[union-attr]
        return out

    def iter_tops(self) -> Iterator[Node]:
        yield from self._tops


def not_a_dir(node: Node) -> FsError:
    """The error for using ``node`` as a directory when it is not one."""
    if node.kind == K_NAME:  # listed before it was learned: the kernel is to look it up again
        return FsError(errno.ESTALE, f"{node.name}: look the name up again")
    return FsError(errno.ENOTDIR, "not a directory")


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name
