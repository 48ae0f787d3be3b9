"""The pyfuse3 adapter: a thin layer over the namespace, the caches and the state.

Every handler goes through `_guarded`, the one place where errors become
errno values: nothing but `pyfuse3.FUSEError` may reach pyfuse3, because any
other exception ends ``pyfuse3.main()`` and leaves the mount dead.

Two ways of serving, chosen at mount time. With zero-message opens (see
`prodfs.kernel._zeroopen`, the normal case) `open` and `opendir` answer ENOSYS once,
the kernel keeps contents and listings, and `read` and `readdir` get an
inode-tagged handle: everything an inode serves must never change, which
holds for versions, and control files get a new inode per lookup
(`prodfs.mount.control`). Otherwise every open and listing comes with a handle.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
import argparse
from typing import Protocol

import trio

from pvc_client import PACK_BLOB_LIMIT, Entry, InvalidInput, NotFound, PVCError, Unauthorized

from ..kernel import INODE_BIT, PASSTHROUGH_BIT, FastLookups, FastReads, Passthrough, pyfuse3
from ..stats import Stats
from ..storage import BlobCache, fetch_ahead_plan
from ._fs_outputs import OutHandle, OutputOps
from .control import ControlSnapshots, Snapshot
from .outputs import Outputs
from .root_listing import RootListing
from .namespace import (
    CONTROL_DIR, CONTROL_NAME, K_CONFLICT, K_CTRL_FILE, K_DIR, K_FILE, K_LINK, K_NAME, K_TOP, ROOT, FsError, Namespace,
    Node, not_a_dir,
)

log = logging.getLogger(__name__)

__all__ = ["Core", "Operations", "to_errno"]

LONG = 86400.0  # immutable things: a day; the kernel may keep them that long
LISTING_CACHE_ENTRIES = 1 << 16  # directory entries kept ready with their attributes (~250 bytes each)
_VERSION_DIRS = (K_TOP, K_DIR)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
# Entries handed to the C lookup path (or payloads to the C read path) between two yields to
# the loop: a few hundred microseconds of work, so a lookup waiting behind it is not held up.
_HAND_OVER_BATCH = 128
_SCRATCH = 1 << 20  # the largest read request libfuse 3 lets the kernel send
WHY_XATTR = "user.prodfs.why."
SNAPSHOT_XATTR = "user.prodfs.snapshot"
PUBLISH_XATTR = "user.prodfs.publish."


def to_errno(exc: BaseException) -> tuple[int, bool]:
    """Map any exception to (errno, expected). Unexpected ones are bugs: EIO."""
    if isinstance(exc, FsError):
        return exc.errno, exc.quiet
    if isinstance(exc, NotFound):
        return errno.ENOENT, True
    if isinstance(exc, Unauthorized):
        return errno.EACCES, False
    if isinstance(exc, InvalidInput):
        return errno.EINVAL, False
    if isinstance(exc, PVCError):  # unavailable, conflict: the service cannot help now
        return errno.EIO, False
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno, False
    return errno.EIO, False


def _guarded(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def wrapper(self: Operations, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except trio.Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place that maps them
            code, quiet = to_errno(exc)
            what = self._describe(fn.__name__, args)
            self.daemon.service_failed(exc)
            if quiet:
                log.debug("%s: %s", what, exc)
            elif code == errno.EIO and not isinstance(exc, (FsError, PVCError, OSError)):
                self.daemon.stats.error(f"{what}: {exc!r}")
                log.exception("%s: unexpected error (answered EIO)", what)
            else:
                self.daemon.stats.error(f"{what}: {exc}")
                log.warning("%s: %s (%s)", what, exc, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None

    return wrapper


class _Handle:
    """What an open or opendir reply stands for (without zero-message opens)."""

    __slots__ = ("ino", "sha", "data", "listing")

    def __init__(self, ino: int, sha: str | None = None, data: bytes | None = None) -> None:
        self.ino, self.sha, self.data = ino, sha, data
        self.listing: list | None = None


class Core(Protocol):
    """What the adapter needs of the mount it serves (the daemon is one)."""

    opts: argparse.Namespace
    stats: Stats
    namespace: Namespace
    blobs: BlobCache
    io_limiter: trio.CapacityLimiter
    root_timeout: float
    outputs: Outputs
    writable: bool

    async def publish_output(self, token: str, request: bytes, uid: int) -> None: ...
    def publish_result(self, token: str) -> dict: ...

    def control_content(self, name: str) -> bytes: ...
    async def explain(self, name: str) -> dict: ...
    async def root_page(self, after: str | None) -> tuple[list[str], str | None]: ...
    async def make_snapshot(self) -> dict: ...
    def service_failed(self, exc: BaseException) -> None: ...


class Operations(OutputOps, pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, daemon: Core) -> None:
        super().__init__()
        self.daemon = daemon
        self.ns = daemon.namespace
        self.outputs = daemon.outputs
        self._out_listings: dict[int, tuple[int, list]] = {}  # see OutputOps.out_listing
        self.blobs = daemon.blobs
        self.stats = daemon.stats
        self._handles: dict[int, _Handle] = {}
        self._fh = itertools.count(1)
        self._uid, self._gid = os.getuid(), os.getgid()
        self._mount_ns = int(time.time() * 1e9)
        self._listings: OrderedDict[int, list[tuple[bytes, pyfuse3.EntryAttributes]]] = OrderedDict()
        self._listed = 0
        self._root_listing: RootListing | None = None
        self._root_ns = self._mount_ns
        # One buffer for every read answered from the page cache: pyfuse3
        # sends a read's reply as soon as `read` returns, before any other
        # task runs, so the next read cannot overwrite it too early. Saves
        # allocating and zeroing a buffer per request.
        self._scratch = memoryview(bytearray(_SCRATCH))
        self._from_disk: dict[str, int] = {}  # sha -> where the last read that went to the disk ended
        self.control = ControlSnapshots(daemon.control_content)
        # Set by the daemon once the session exists: see the module docstring.
        self.zero_open = False
        self.fast: FastReads | None = None
        self.fast_lookups: FastLookups | None = None
        self.passthrough: Passthrough | None = None
        # version directories whose entries went to the C lookup path (or are on their way)
        self._handed: set[int] = set()
        self._hand_over, self._to_hand_over = trio.open_memory_channel[tuple[int, int]](1024)

    def root_changed(self) -> None:
        """The root's entries changed (publish, rename, new context): list it afresh."""
        self._root_listing = None
        # A new mtime makes the kernel drop its copy of the listing when it
        # next checks the root's attributes (the daemon also invalidates it).
        self._root_ns = max(time.time_ns(), self._root_ns + 1)

    # -- helpers -----------------------------------------------------------
    def _describe(self, op: str, args: tuple) -> str:
        for a in args:
            if isinstance(a, bytes):
                return f"{op} {a.decode('utf-8', 'replace')!r}"
        return f"{op}{tuple(a for a in args if isinstance(a, int))}"

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        ns = self.ns
        mode = ns.mode(node)
        if node.kind == K_CTRL_FILE:
            size = len(self.daemon.control_content(node.name))
        else:
            size = ns.size(node)
        us = ns.mtime_us(node)
        t = us * 1000 if us is not None else self._root_ns if node.ino == ROOT else self._mount_ns
        return self._entry(node.ino, mode, size, t, *self._timeouts(node))

    def _entry(self, ino: int, mode: int, size: int, t_ns: int, entry_timeout: float, attr_timeout: float,
               blksize: int = 128 * 1024) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = mode
        a.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        a.st_size = size
        a.st_blocks = (size + 511) // 512
        a.st_blksize = blksize
        a.st_uid, a.st_gid = self._uid, self._gid
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = t_ns
        a.entry_timeout, a.attr_timeout = entry_timeout, attr_timeout
        return a

    def _timeouts(self, node: Node) -> tuple[float, float]:
        if node.kind == K_CONFLICT or node.kind == K_CTRL_FILE or node.kind == K_NAME:
            return 0.0, 0.0
        if node.kind == K_TOP:
            # The name -> version mapping may move; the version never does.
            assert node.view is not None
            if node.view.kind == "explicit":
                return LONG, LONG
            return self.daemon.root_timeout, LONG
        if node.view is not None:
            return LONG, LONG
        return self.daemon.root_timeout, self.daemon.root_timeout

    def _negative(self, parent: int, timeout: float | None = None) -> pyfuse3.EntryAttributes:
        self.stats.negative_lookups += 1
        a = pyfuse3.EntryAttributes()
        a.st_ino = 0
        a.entry_timeout = timeout if timeout is not None else self.daemon.root_timeout if parent == ROOT else LONG
        return a

    def _snapshot_attrs(self, snap: Snapshot) -> pyfuse3.EntryAttributes:
        # Never reuse the entry (each open must look up a new rendering); the
        # attributes of this rendering never change.
        return self._entry(snap.ino, stat.S_IFREG | 0o444, len(snap.data), snap.mtime_ns, 0.0, LONG, 4096)

    @staticmethod
    def _name(name: bytes) -> str:
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise FsError(errno.ENOENT, f"{name!r}: not UTF-8", quiet=True) from None

    # -- metadata ------------------------------------------------------------
    @_guarded
    async def lookup(self, parent_inode, name, ctx=None):
        self.stats.lookups += 1
        if self.outputs.owns(parent_inode):
            return self.out_lookup(parent_inode, self._name(name))
        if parent_inode == ROOT and self.outputs.declared and (pri := self.outputs.output_name(self._name(name))):
            attrs = await self.out_root(pri)
            if attrs is not None:
                return attrs
        try:
            node = await self.ns.lookup(parent_inode, self._name(name))
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            log.debug("lookup %r: %s", name, exc)
            return self._negative(parent_inode)
        if node.kind == K_CTRL_FILE:
            return self._snapshot_attrs(self.control.take(node.name))
        if node.kind == K_FILE and self.fast is not None and node.entry is not None:
            self._offer([(node.ino, node.entry)])
        if node.view is not None and node.kind != K_TOP and self.fast_lookups is not None:
            self._hand_over_later(parent_inode)
        elif node.kind == K_TOP and self.fast_lookups is not None and node.ino not in self._handed:
            first = self.ns.loaded_listing(node.ino, _HAND_OVER_BATCH)
            if first is not None:
                # Its version is loaded already (a snapshot's companions, another name of it):
                # its first names are the library's before this answer, so that the lookup the
                # kernel sends next, inside it, does not come here too. The rest, and the
                # payloads, are the hand-over task's.
                self._put_names(node.ino, first)
                self._hand_over_later(node.ino, names_from=_HAND_OVER_BATCH)
        return self._attrs(node)

    def _hand_over_later(self, parent: int, names_from: int = 0) -> None:
        """Queue a version directory for the C lookup path: its siblings' lookups will not come here.

        ``names_from``: the names before it were given already."""
        if parent in self._handed:
            return
        if len(self._handed) >= 1 << 20:
            self._handed.clear()  # bounded: a directory handed over twice costs one more listing
        try:
            self._hand_over.send_nowait((parent, names_from))
        except trio.WouldBlock:
            return  # busy: a later lookup in it asks again
        self._handed.add(parent)

    def _put_names(self, parent: int, listing: list[tuple[str, Node]]) -> None:
        assert self.fast_lookups is not None
        self.fast_lookups.put_many(parent, [(name.encode(), self._attrs(node)) for name, node in listing
                                            if node.kind in (K_FILE, K_DIR, K_LINK)])  # what `lookup` would answer

    async def hand_over_listings(self) -> None:
        """Give the C lookup path every entry of the version directories queued by `lookup`.

        A task of its own, so that a large directory never holds up the
        lookup that asked for it; it yields every few entries.
        """
        async for parent, names_from in self._to_hand_over:
            try:
                listing = await self.ns.listing(parent)
            except Exception as exc:  # noqa: BLE001 - the slow path still answers; never end the task
                log.debug("listing %d for the C lookup path: %s", parent, exc)
                continue
            # Every name first, then the payloads: a sibling's lookup waits for the
            # library's table, not for the ledger. A batch is one call into the
            # library: a call per entry cost more than the rest of the work (fresh
            # daemon, 100 files a directory: 2.3 ms a directory, on the CPU the
            # reader thread needed to answer the lookups meanwhile).
            for i in range(names_from, len(listing), _HAND_OVER_BATCH):
                if i > names_from:
                    await trio.sleep(0)
                self._put_names(parent, listing[i:i + _HAND_OVER_BATCH])
            if self.fast is None:
                continue
            files = [(node.ino, node.entry) for _, node in listing if node.kind == K_FILE and node.entry is not None]
            for i in range(0, len(files), _HAND_OVER_BATCH):
                await trio.sleep(0)
                self._offer(files[i:i + _HAND_OVER_BATCH])

    @_guarded
    async def getattr(self, inode, ctx=None):
        self.stats.getattrs += 1
        if self.outputs.owns(inode):
            return self.out_getattr(inode)
        if self.control.owns(inode):
            return self._snapshot_attrs(self._snapshot(inode))
        return self._attrs(self.ns.node(inode))

    def _content(self, inode: int) -> bytes | Node:
        """The bytes a control file serves (its rendering), or the node of any other inode."""
        if self.control.owns(inode):
            return self._snapshot(inode).data
        node = self.ns.node(inode)
        if node.kind == K_CTRL_FILE:  # listed, then opened or read without a lookup: render it now
            return self.daemon.control_content(node.name)
        return node

    def _snapshot(self, inode: int) -> Snapshot:
        snap = self.control.get(inode)
        if snap is None:
            raise FsError(errno.ENOENT, f"stale inode {inode}")
        return snap

    @_guarded
    async def readlink(self, inode, ctx):
        if self.outputs.owns(inode):
            return self.out_readlink(inode)
        node = self.ns.node(inode)
        if node.kind != K_LINK:
            raise FsError(errno.EINVAL, "not a symlink")
        return node.entry.target.encode()  # type: ignore[union-attr]

    @_guarded
    async def opendir(self, inode, ctx):
        if self.zero_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # once: the kernel stops sending OPENDIR
        if self.outputs.owns(inode):
            self._out_dir(inode)
        else:
            self._listable(self.ns.node(inode))
        fh = next(self._fh)
        # The listing is made at the first readdir, and kept for this handle.
        self._handles[fh] = _Handle(inode)
        return fh

    @staticmethod
    def _listable(node: Node) -> None:
        if not node.is_dir:
            if node.kind == K_NAME:
                raise not_a_dir(node)
            raise FsError(errno.ENOTDIR if node.kind != K_CONFLICT else errno.EIO, node.name or "not a directory")

    async def _listing(self, inode: int) -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
        if self.outputs.owns(inode):
            return self.out_listing(inode)  # never kept: it changes
        node = self.ns.node(inode)
        self._listable(node)
        if node.kind not in _VERSION_DIRS:
            return self._prepare(await self.ns.listing(inode))
        listing = self._listings.get(inode)
        if listing is not None:
            self._listings.move_to_end(inode)
        else:
            listing = self._prepare(await self.ns.listing(inode))
            self._remember(inode, listing)
        return listing

    def _root(self) -> RootListing:
        """The root's listing for the current names (made afresh when they change)."""
        if self._root_listing is None:
            listed: set[str] = set()

            async def make(names: list[str]) -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
                out = []
                declared = self.outputs.declared
                for name in names:
                    if declared and name in declared:
                        listed.add(name)
                        attrs = await self.out_root(name)
                        if attrs is not None:
                            out.append((name.encode(), attrs))
                            continue
                    node = self.ns.root_entry(name)
                    if node is not None:
                        out.append((name.encode(), self._attrs(node)))
                return out

            async def tail() -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
                # outputs the store has no version of yet
                out = []
                for pri in self.outputs.declared:
                    if pri not in listed and (attrs := await self.out_root(pri)) is not None:
                        out.append((pri.encode(), attrs))
                return sorted(out)

            head = [(CONTROL_NAME.encode(), self._attrs(self.ns.node(CONTROL_DIR)))]
            self._root_listing = RootListing(self.daemon.root_page, make, head, tail, self.ns.state.listing)
        return self._root_listing

    def _prepare(self, listing: list[tuple[str, Node]]) -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
        return [(name.encode(), self._attrs(node)) for name, node in listing]

    def _remember(self, inode: int, listing: list) -> None:
        # A version's directory never changes: its entries, attributes
        # included, are kept ready for the next listing (a walk lists every
        # directory again, and readdirplus wants attributes for each entry).
        # Bounded by entries, least recently listed first out.
        self._listings[inode] = listing
        self._listed += len(listing)
        while self._listed > LISTING_CACHE_ENTRIES and len(self._listings) > 1:
            _, dropped = self._listings.popitem(last=False)
            self._listed -= len(dropped)

    @_guarded
    async def readdir(self, fh, start_id, token):
        self.stats.readdirs += 1
        if (fh ^ INODE_BIT if fh & INODE_BIT else self._handles[fh].ino) == ROOT:
            return await self._readdir_root(start_id, token)
        if fh & INODE_BIT and self.outputs.owns(fh ^ INODE_BIT):
            listing = self.out_listing(fh ^ INODE_BIT, continuing=start_id > 0)
        elif fh & INODE_BIT:
            # Zero-message opens: the kernel asks for a listing it will keep.
            listing = await self._listing(fh ^ INODE_BIT)
        else:
            h = self._handles[fh]
            if h.listing is None:
                # Offsets are positions in this listing: stable for this
                # handle whatever is published meanwhile.
                h.listing = await self._listing(h.ino)
            listing = h.listing
        reply = pyfuse3.readdir_reply
        for i in range(start_id, len(listing)):
            name, attrs = listing[i]
            if not reply(token, name, attrs, i + 1):
                break

    async def _readdir_root(self, pos: int, token) -> None:
        # positions are kept by the listing of the current names: a listing
        # that began before they changed goes on with the new ones (as a
        # directory on disk does when entries come and go meanwhile)
        listing = self._root()
        reply = pyfuse3.readdir_reply
        while part := await listing.at(pos):
            for name, attrs in part:
                pos += 1
                if not reply(token, name, attrs, pos):
                    return

    @_guarded
    async def releasedir(self, fh):
        self._handles.pop(fh, None)

    @_guarded
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        usage = self.daemon.blobs.size
        s.f_blocks = max(1, usage // 4096)
        s.f_bfree = s.f_bavail = 0
        if self.outputs.declared:  # room for writing: the scratch disk's
            free = self.outputs.free_bytes()
            s.f_blocks += free // 4096
            s.f_bfree = s.f_bavail = free // 4096
        s.f_files = len(self.ns)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    @_guarded
    async def getxattr(self, inode, name, ctx):
        key = name.decode("utf-8", "replace")
        if inode == CONTROL_DIR and key.startswith(WHY_XATTR):
            # control of a running mount goes through xattrs of its control dir
            return json.dumps(await self.daemon.explain(key[len(WHY_XATTR):]), sort_keys=True).encode()
        if inode == CONTROL_DIR and key == SNAPSHOT_XATTR:
            return json.dumps(await self.daemon.make_snapshot(), sort_keys=True).encode()
        if inode == CONTROL_DIR and key.startswith(PUBLISH_XATTR):
            return json.dumps(self.daemon.publish_result(key[len(PUBLISH_XATTR):]), sort_keys=True).encode()
        value = self._xattrs(inode).get(key)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_guarded
    async def listxattr(self, inode, ctx):
        return [k.encode() for k in self._xattrs(inode)]

    def _xattrs(self, inode: int) -> dict[str, bytes]:
        if self.outputs.owns(inode):
            return self.out_xattrs(inode)
        if self.control.owns(inode):
            self._snapshot(inode)
            return {}
        return self.ns.xattrs(self.ns.node(inode))

    async def forget(self, inode_list):
        # Nodes are kept for the life of the mount so that inode numbers stay
        # stable; only the renderings of control files go.
        for inode, nlookup in inode_list:
            if self.control.owns(inode):
                self.control.forget(inode, nlookup)

    # -- data ----------------------------------------------------------------
    @_guarded
    async def open(self, inode, flags, ctx):
        if self.outputs.owns(inode):
            return await self.out_open(inode, flags)
        passthrough = self.passthrough is not None and self.passthrough.active
        # Once: the kernel stops sending OPEN and RELEASE. Not where outputs may be written:
        # their writes need a handle of their own.
        if self.zero_open and not passthrough and not self.daemon.writable:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if flags & _WRITE_FLAGS:
            raise FsError(errno.EROFS, "read-only filesystem", quiet=True)
        self.stats.opens += 1
        fh = next(self._fh)
        content = self._content(inode)
        if isinstance(content, bytes):
            self._handles[fh] = _Handle(inode, data=content)
            # a rendering's inode never changes; what a listed control file serves does
            return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=not self.control.owns(inode))
        entry = self._file_entry(content)
        if entry.size and entry.sha256 not in self.daemon.blobs:
            await self._fetch_ahead(content, entry)
        if entry.size and passthrough:
            await self.daemon.blobs.ensure(entry.sha256, entry.size)  # fetched and verified: errors belong to open
            self._offer([(inode, entry)])
            # The library replies with the payload's file (see _libpassthrough.c); the kernel holds
            # it while open, so nothing is pinned here, and the RELEASE is answered there too.
            return pyfuse3.FileInfo(fh=inode | PASSTHROUGH_BIT, keep_cache=True)
        if entry.size:
            await self.daemon.blobs.open_fd(entry.sha256, entry.size)  # fetch or check it now: errors belong to open
            self.daemon.blobs.acquire(entry.sha256)
        self._handles[fh] = _Handle(inode, sha=entry.sha256 if entry.size else None)
        # The content behind an inode never changes: let the kernel keep it.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def _fetch_ahead(self, node: Node, entry: Entry) -> None:
        """A payload not in the cache: fetch it with its small neighbours, in one request."""
        blobs = self.daemon.blobs
        budget = self.daemon.opts.fetch_ahead
        if blobs.max_bytes is not None:  # a guess never takes more than an eighth of a bounded cache
            budget = min(budget, blobs.max_bytes // 8)
        if entry.size > min(budget, PACK_BLOB_LIMIT):
            return
        plan = fetch_ahead_plan(entry, await self.ns.neighbours(node), budget)
        if len(plan) > 1:  # alone, it streams to disk and resumes where it broke: `ensure` does that
            await blobs.try_fetch_many(plan)

    @staticmethod
    def _file_entry(node: Node) -> Entry:
        if node.kind != K_FILE:
            raise FsError(errno.EISDIR if node.is_dir else errno.EINVAL, "not a regular file")
        entry = node.entry
        assert entry is not None and entry.sha256 is not None
        return entry

    @_guarded
    async def read(self, fh, off, size):
        if fh & (INODE_BIT | PASSTHROUGH_BIT):  # an open the kernel or the library answered
            inode, data = fh & (PASSTHROUGH_BIT - 1), None
        else:
            h = self._handles[fh]
            if isinstance(h, OutHandle):
                return await self.out_read(h, off, size)
            inode, data = h.ino, h.data
        content = data if data is not None else self._content(inode)
        if isinstance(content, bytes):
            return content[off:off + size]  # a control file: not counted as payload
        entry = self._file_entry(content)
        self.stats.reads += 1
        # The kernel asks past the end (a whole page, a readahead window):
        # ask the disk for what is there, so that a read ending at EOF is
        # complete rather than short (a short one would take the slow path).
        size = min(size, entry.size - off)
        if entry.sha256 not in self.daemon.blobs:  # zero-message opens: the first read is the first sign
            await self._fetch_ahead(content, entry)
        out = await self._pread(entry.sha256, entry.size, size, off) if size > 0 else b""
        self.stats.bytes_read += len(out)
        if self.fast is not None:
            self._offer([(inode, entry)])
        return out

    def _offer(self, files: list[tuple[int, Entry]]) -> None:
        """Let the C read path answer these inodes' reads, for those whose payloads are local and verified.

        Never hashes, never waits and opens nothing (one ledger query for
        them all): a payload that needs checking or fetching is left to
        `read`, which offers its inode again once it is verified.
        """
        fast = self.fast
        assert fast is not None
        todo = [(ino, e.sha256) for ino, e in files if e.size and e.sha256 and not fast.map(ino, e.sha256)]
        if not todo:
            return
        blobs = self.daemon.blobs
        signatures = blobs.trusted_signatures([sha for _, sha in todo])
        fast.put_many([(ino, sha, blobs.path_bytes(sha), signature) for ino, sha in todo
                       if (signature := signatures.get(sha)) is not None])  # not verified: left to `read`

    async def _pread(self, sha: str, blob_size: int, size: int, off: int) -> bytes | memoryview:
        fd = await self.daemon.blobs.open_fd(sha, blob_size)
        # Fast path: data already in the page cache is read on this thread,
        # into the scratch buffer (no await from here to the reply); only a
        # read that would block on the disk goes to a worker thread. A read
        # continuing one that went to the disk goes there directly: trying
        # the page cache first would copy the part readahead brought in, for
        # nothing.
        if _RWF_NOWAIT and self._from_disk.get(sha) != off:
            view = self._scratch[:size] if size <= _SCRATCH else memoryview(bytearray(size))
            try:
                if os.preadv(fd, [view], off, _RWF_NOWAIT) == size:
                    return view
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        # The cache may close its fd while the thread reads: read from a duplicate.
        dup = os.dup(fd)
        if len(self._from_disk) >= 1024:
            self._from_disk.clear()
        self._from_disk[sha] = off + size
        try:
            return await trio.to_thread.run_sync(_read_all, dup, size, off, limiter=self.daemon.io_limiter)
        finally:
            os.close(dup)

    async def flush(self, fh):
        # Nothing is ever dirty. ENOSYS tells the kernel once for all: it
        # stops sending FLUSH, a round trip saved on every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_guarded
    async def release(self, fh):
        h = self._handles.pop(fh, None)
        if isinstance(h, OutHandle):
            h.close()
        elif h is not None and h.sha is not None:
            self.daemon.blobs.release(h.sha)

    # -- everything that would write: outputs only --------------------------
    def _writable_dir(self, parent: int) -> None:
        if not self.outputs.owns(parent):
            raise FsError(errno.EROFS, "read-only: only a workspace's outputs are writable", quiet=True)

    @_guarded
    async def write(self, fh, off, buf):
        h = self._handles.get(fh)
        if not isinstance(h, OutHandle):
            raise FsError(errno.EROFS, "read-only", quiet=True)
        return await self.out_write(h, off, buf)

    @_guarded
    async def create(self, parent_inode, name, mode, flags, ctx):
        self._writable_dir(parent_inode)
        return await self.out_create(parent_inode, self._name(name), mode, flags)

    @_guarded
    async def mkdir(self, parent_inode, name, mode, ctx):
        self._writable_dir(parent_inode)
        return await self.out_mkdir(parent_inode, self._name(name), mode)

    @_guarded
    async def symlink(self, parent_inode, name, target, ctx):
        self._writable_dir(parent_inode)
        return await self.out_symlink(parent_inode, self._name(name), self._name(target))

    @_guarded
    async def unlink(self, parent_inode, name, ctx):
        self._writable_dir(parent_inode)
        await self.out_unlink(parent_inode, self._name(name), directory=False)

    @_guarded
    async def rmdir(self, parent_inode, name, ctx):
        self._writable_dir(parent_inode)
        await self.out_unlink(parent_inode, self._name(name), directory=True)

    @_guarded
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if not (self.outputs.owns(parent_inode_old) or self.outputs.owns(parent_inode_new)):
            raise FsError(errno.EROFS, "read-only", quiet=True)
        await self.out_rename(parent_inode_old, self._name(name_old), parent_inode_new, self._name(name_new), flags)

    @_guarded
    async def setattr(self, inode, attr, fields, fh, ctx):
        if not self.outputs.owns(inode):
            raise FsError(errno.EROFS, "read-only", quiet=True)
        return await self.out_setattr(inode, attr, fields, fh)

    @_guarded
    async def link(self, inode, new_parent_inode, new_name, ctx):
        self._writable_dir(new_parent_inode)
        raise FsError(errno.EPERM, "hard links cannot be kept in a version", quiet=True)

    @_guarded
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        self._writable_dir(parent_inode)
        raise FsError(errno.EPERM, "only files, directories and symlinks can be kept in a version", quiet=True)

    @_guarded
    async def setxattr(self, inode, name, value, ctx):
        key = name.decode("utf-8", "replace")
        if inode == CONTROL_DIR and key.startswith(PUBLISH_XATTR):
            # ``prodfs publish``: the answer is read back with getxattr of the same name
            await self.daemon.publish_output(key[len(PUBLISH_XATTR):], value, ctx.uid)
            return
        if self.outputs.owns(inode):
            raise FsError(errno.ENOTSUP, "extended attributes are not kept in a version", quiet=True)
        raise FsError(errno.EROFS, "read-only", quiet=True)

    @_guarded
    async def removexattr(self, inode, name, ctx):
        if self.outputs.owns(inode):
            raise FsError(errno.ENOTSUP, "extended attributes are not kept in a version", quiet=True)
        raise FsError(errno.EROFS, "read-only", quiet=True)

    @_guarded
    async def fsync(self, fh, datasync):
        h = self._handles.get(fh)
        if isinstance(h, OutHandle):
            await self.out_fsync(h)
        # anything else is never dirty

    @_guarded
    async def fsyncdir(self, fh, datasync):
        if self.outputs.declared:
            await self.out_fsync(None)


def _read_all(fd: int, size: int, off: int) -> bytes:
    """``size`` bytes at ``off``, fewer only at the end of the file."""
    data = os.pread(fd, size, off)
    while 0 < len(data) < size:  # a short read before the end: the rest, rarely
        more = os.pread(fd, size - len(data), off + len(data))
        if not more:
            break
        data += more
    return data
