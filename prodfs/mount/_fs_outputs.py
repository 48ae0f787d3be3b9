"""The FUSE side of workspace outputs: what `prodfs.mount.fs` answers for their inodes.

A mixin of `prodfs.mount.fs.Operations`: every handler there that may touch
an output asks `Outputs.owns` first and comes here; errors are mapped by the
same `_guarded` as everything else. The logic (trees, names, publishing) is
in `prodfs.mount.outputs` and `prodfs.storage.scratch`.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

import trio

from ..kernel import pyfuse3
from ..storage.scratch import ROOT_ID, Item
from .namespace import FsError
from .outputs import Output, Outputs

if TYPE_CHECKING:
    from ..storage import BlobCache

__all__ = ["OutputOps", "OutHandle"]

OUTPUT_TIMEOUT = 1.0  # only this mount changes an output, and the kernel sees every change it makes
_WRITE = os.O_WRONLY | os.O_RDWR
_BIG = 256 * 1024  # reads and writes larger than this go to a thread


class OutHandle:
    """An open file of an output: its data fd once written, or the base payload it still is."""

    __slots__ = ("out", "item_id", "fd", "sha", "size")

    def __init__(self, out: Output, item: Item, fd: int | None) -> None:
        self.out, self.item_id, self.fd = out, item.id, fd
        self.sha, self.size = item.sha256, item.size

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class OutputOps:
    """Handlers for output inodes; mixed into `Operations`, which provides the attributes used here."""

    outputs: Outputs
    _handles: dict
    _out_listings: dict[int, tuple[int, list]]
    _fh: object

    if TYPE_CHECKING:
        blobs: BlobCache

        def _entry(self, ino: int, mode: int, size: int, t_ns: int, entry_timeout: float, attr_timeout: float,
                   blksize: int = ...) -> pyfuse3.EntryAttributes: ...
        async def _pread(self, sha: str, blob_size: int, size: int, off: int) -> bytes | memoryview: ...
        def _negative(self, parent: int, timeout: float | None = None) -> pyfuse3.EntryAttributes: ...

    # -- attributes ----------------------------------------------------------
    def _out_attrs(self, out: Output, item: Item) -> pyfuse3.EntryAttributes:
        size, mtime_ns = out.tree.size_and_mtime(item)
        kind = stat.S_IFDIR if item.is_dir else stat.S_IFLNK if item.type == "symlink" else stat.S_IFREG
        mode = kind | (0o777 if item.type == "symlink" else item.mode)
        return self._entry(out.ino(item.id), mode, size, mtime_ns, OUTPUT_TIMEOUT, OUTPUT_TIMEOUT, 4096)

    def _out_dir(self, ino: int) -> tuple[Output, Item]:
        out, item = self.outputs.item(ino)
        if not item.is_dir:
            raise FsError(errno.ENOTDIR, item.name)
        return out, item

    async def out_root(self, pri: str) -> pyfuse3.EntryAttributes | None:
        out = await self.outputs.open(pri)
        if out is None:
            return None  # another mount writes it: this one reads the version, as an input
        item = out.tree.get(ROOT_ID)
        assert item is not None
        return self._out_attrs(out, item)

    def out_lookup(self, parent: int, name: str) -> pyfuse3.EntryAttributes:
        out, dir_item = self._out_dir(parent)
        item = out.tree.child(dir_item.id, name)
        if item is None:  # kept as long as the others: a create through this mount drops it
            return self._negative(parent, OUTPUT_TIMEOUT)
        return self._out_attrs(out, item)

    def out_getattr(self, ino: int) -> pyfuse3.EntryAttributes:
        return self._out_attrs(*self.outputs.item(ino))

    def out_listing(self, ino: int, *, continuing: bool = False) -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
        """A directory's entries. Without handles (zero-message opendir) a large listing comes in
        parts, each a request: a part after the first reuses the listing while the directory is
        unchanged (its mtime moves with every change of its entries), instead of listing it again."""
        out, item = self._out_dir(ino)
        kept = self._out_listings.get(ino)
        if continuing and kept is not None and kept[0] == item.mtime_ns:
            return kept[1]
        listing = [(c.name.encode(), self._out_attrs(out, c)) for c in out.tree.children(item.id)]
        if len(self._out_listings) >= 64:
            self._out_listings.clear()
        self._out_listings[ino] = (item.mtime_ns, listing)
        return listing

    def out_readlink(self, ino: int) -> bytes:
        _, item = self.outputs.item(ino)
        if item.type != "symlink":
            raise FsError(errno.EINVAL, "not a symlink")
        return (item.target or "").encode()

    def out_xattrs(self, ino: int) -> dict[str, bytes]:
        out, item = self.outputs.item(ino)
        if item.id != ROOT_ID:
            return {}
        info = out.tree.info()
        return {
            "user.prodfs.output": out.pri.encode(),
            "user.prodfs.workspace": (self.outputs.workspace or "").encode(),
            "user.prodfs.base": str(info.get("base") or "").encode(),
            "user.prodfs.scratch": str(out.tree.path).encode(),
        }

    # -- changing names ------------------------------------------------------
    async def out_create(self, parent: int, name: str, mode: int, flags: int) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        out, dir_item = self._out_dir(parent)
        async with out.lock:
            item, fd = out.tree.create(dir_item.id, name, mode)
        fh = next(self._fh)  # type: ignore[call-overload]
        self._handles[fh] = OutHandle(out, item, fd)
        return pyfuse3.FileInfo(fh=fh), self._out_attrs(out, item)

    async def out_mkdir(self, parent: int, name: str, mode: int) -> pyfuse3.EntryAttributes:
        out, dir_item = self._out_dir(parent)
        async with out.lock:
            item = out.tree.mkdir(dir_item.id, name, mode)
        return self._out_attrs(out, item)

    async def out_symlink(self, parent: int, name: str, target: str) -> pyfuse3.EntryAttributes:
        out, dir_item = self._out_dir(parent)
        async with out.lock:
            item = out.tree.symlink(dir_item.id, name, target)
        return self._out_attrs(out, item)

    async def out_unlink(self, parent: int, name: str, *, directory: bool) -> None:
        out, dir_item = self._out_dir(parent)
        async with out.lock:
            (out.tree.rmdir if directory else out.tree.unlink)(dir_item.id, name)

    async def out_rename(self, old_parent: int, old: str, new_parent: int, new: str, flags: int) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "renaming with RENAME_EXCHANGE is not supported")
        if not (self.outputs.owns(old_parent) and self.outputs.owns(new_parent)):
            raise FsError(errno.EXDEV, "a rename into or out of an output tree")
        out, src = self._out_dir(old_parent)
        out2, dst = self._out_dir(new_parent)
        if out is not out2:
            raise FsError(errno.EXDEV, "a rename between two outputs")
        async with out.lock:
            out.tree.rename(src.id, old, dst.id, new, noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))

    # -- contents ------------------------------------------------------------
    async def _copy_up(self, out: Output, item: Item, *, empty: bool) -> Item:
        """A base file about to be written: its bytes into the tree first (none when truncated to 0)."""
        if item.written:
            return item
        source = None
        if not empty and item.size:
            assert item.sha256 is not None
            source = await self.blobs.ensure(item.sha256, item.size)
        await trio.to_thread.run_sync(out.tree.copy_payload, item, source)
        return out.tree.mark_written(item)

    async def out_open(self, ino: int, flags: int) -> pyfuse3.FileInfo:
        out, item = self.outputs.item(ino)
        if item.is_dir:
            raise FsError(errno.EISDIR, item.name)
        if item.type != "file":
            raise FsError(errno.ELOOP, item.name)
        fd = None
        if flags & _WRITE or flags & os.O_TRUNC:
            async with out.lock:
                item = await self._copy_up(out, item, empty=bool(flags & os.O_TRUNC))
                fd = os.open(out.tree.data_path(item.id), os.O_RDWR | os.O_CLOEXEC)
                if flags & os.O_TRUNC:
                    os.ftruncate(fd, 0)
        elif item.written:
            fd = os.open(out.tree.data_path(item.id), os.O_RDONLY | os.O_CLOEXEC)
        fh = next(self._fh)  # type: ignore[call-overload]
        self._handles[fh] = OutHandle(out, item, fd)
        # only this mount writes the file, through the kernel: its page cache stays right
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def out_read(self, h: OutHandle, off: int, size: int) -> bytes | memoryview:
        if h.fd is None:
            item = h.out.tree.get(h.item_id)
            if item is not None and item.written:  # written through another open since this one
                h.fd = os.open(h.out.tree.data_path(item.id), os.O_RDONLY | os.O_CLOEXEC)
        if h.fd is not None:
            if size > _BIG:
                return await trio.to_thread.run_sync(os.pread, h.fd, size, off)
            return os.pread(h.fd, size, off)
        size = min(size, h.size - off)
        if size <= 0 or h.sha is None:
            return b""
        return await self._pread(h.sha, h.size, size, off)

    async def out_write(self, h: OutHandle, off: int, buf: bytes) -> int:
        if h.fd is None:
            raise FsError(errno.EBADF, "not open for writing")
        async with h.out.lock:
            if len(buf) > _BIG:
                return await trio.to_thread.run_sync(os.pwrite, h.fd, buf, off)
            return os.pwrite(h.fd, buf, off)

    async def out_setattr(self, ino: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                          fh: int | None) -> pyfuse3.EntryAttributes:
        out, item = self.outputs.item(ino)
        async with out.lock:
            if fields.update_uid and attr.st_uid not in (os.getuid(), 0xFFFFFFFF):
                raise FsError(errno.EPERM, "an output's files all belong to the mount's owner")
            if fields.update_gid and attr.st_gid not in (os.getgid(), 0xFFFFFFFF):
                raise FsError(errno.EPERM, "an output's files all belong to the mount's group")
            if fields.update_size:
                if item.type != "file":
                    raise FsError(errno.EISDIR if item.is_dir else errno.EINVAL, item.name)
                item = await self._copy_up(out, item, empty=attr.st_size == 0)
                out.tree.truncate(item, attr.st_size)
            if fields.update_mode:
                out.tree.set_mode(item, stat.S_IMODE(attr.st_mode))
            if fields.update_mtime:
                out.tree.set_mtime(item, attr.st_mtime_ns)
        return self._out_attrs(out, item)

    async def out_fsync(self, h: OutHandle | None) -> None:
        if h is not None and h.fd is not None:
            await trio.to_thread.run_sync(os.fsync, h.fd)
        for out in ([h.out] if h is not None else self.outputs.opened()):
            # the checkpoint's fsync blocks this thread briefly; the connection must stay on it
            out.tree.checkpoint()
            await trio.to_thread.run_sync(out.tree.sync_data_dir)
