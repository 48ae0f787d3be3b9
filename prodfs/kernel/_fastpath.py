"""Requests answered in C, by the library `_zeroopen` loads (`_libfastread.c`, `_libfastlookup.c`, `_libpassthrough.c`).

The payload files the read path and passthrough serve are in `_libslots.c`,
which `FastReads` fills; `_libprodfs.h` states what the C files give each
other, docs/kernel.md what each answers, what it leaves to Python and how
to turn it off (``--no-fast-path``: all three; ``--no-passthrough``).

A request that reaches pyfuse3 costs about 150 us of CPU on the event loop
before the handler runs. Three kinds of request need nothing the daemon does
not already know, and the library answers them on its own (with passthrough,
on a thread of its own that reads the device and queues the other requests
for pyfuse3):

- READ of a payload that is local and verified (`FastReads`). The daemon
  registers an inode once it knows that (at lookup, or after serving a read
  itself); from then on the library's threads answer its reads, as long as
  the payload file keeps the signature it was verified with. Control files,
  payloads not fetched or not verified yet, and a file that changed go to
  `prodfs.mount.fs.Operations.read` as before, which fetches, verifies or
  refetches, and registers the inode again. Registration is by content: a
  slot per payload (a file of the cache, opened by the library at its first
  read; with passthrough, at its first open, and only while it is open),
  `slots` of them at most, least recently registered reused first, and a
  map from inode to slot.
- OPEN of such a payload, when the kernel can read the cache's file itself
  (`Passthrough`, Linux 6.9 or later, as root): the open binds the FUSE
  file to the cache's file, and its reads, mmaps and readahead never reach
  the daemon at all. An open of a payload not registered yet comes to
  `prodfs.mount.fs.Operations.open`, which fetches and verifies it, registers
  it, and asks for passthrough with a handle tagged `PASSTHROUGH_BIT`.
- LOOKUP of a name inside a version (`FastLookups`). A version's tree never
  changes, so once the daemon has answered one lookup in a directory of it,
  it gives the library the whole directory, and the siblings' lookups are
  answered there. Root names, which move with the context, always come to
  the daemon.

Each counts what it answers; the daemon adds that to its own counters.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..storage import Signature
from . import _zeroopen

if TYPE_CHECKING:
    import pyfuse3

log = logging.getLogger(__name__)

__all__ = ["FastReads", "FastLookups", "Passthrough", "PASSTHROUGH_BIT"]

PASSTHROUGH_BIT = 1 << 61  # PRODFS_PASSTHROUGH_BIT in _libprodfs.h: "open this inode in passthrough"

_COUNTERS = ("reads", "bytes_read", "fallbacks", "errors")

# struct prodfs_slot_rec and struct prodfs_lookup_rec of _libprodfs.h (native order, no padding)
_SLOT_REC = struct.Struct("=QQQQQII")
_LOOKUP_REC = struct.Struct("=QQqddIIIIII")
_MAP_ONLY = 0xFFFFFFFF  # PRODFS_MAP_ONLY


def _library() -> ctypes.CDLL | None:
    """The zero-open library, if pyfuse3's session was made through it (both paths live there)."""
    lib = _zeroopen.library()
    return lib if lib is not None and _zeroopen.sessions() else None


class FastReads:
    """The daemon's side of the C read path; `start` returns None when the library is not there.

    Fills the payload slots of `_libslots.c` (``prodfs_fastread_put_many``, ``map``,
    ``drop``), which `_libfastread.c`'s threads and `_libpassthrough.c` borrow;
    they are lent only between `start` and `stop`.
    """

    def __init__(self, lib: ctypes.CDLL, slots: int) -> None:
        self._lib = lib
        self._slots: OrderedDict[str, tuple[int, int]] = OrderedDict()  # sha -> (slot, generation)
        self._free = list(range(slots - 1, -1, -1))
        self._counters = (ctypes.c_uint64 * 4).in_dll(lib, "prodfs_fastread_counters")
        self._slot_reads = (ctypes.c_uint32 * slots).in_dll(lib, "prodfs_fastread_slot_reads")
        self._seen = [0] * slots

    @classmethod
    def start(cls, threads: int = 4, slots: int = 4096, max_fds: int = 1024) -> FastReads | None:
        """``max_fds``: how many payload files the slots may keep open for reads (passthrough keeps none)."""
        lib = _library()
        if lib is None:
            return None
        lib.prodfs_fastread_put_many.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p,
                                                 ctypes.POINTER(ctypes.c_int64)]
        lib.prodfs_fastread_put_many.restype = None
        lib.prodfs_fastread_map.argtypes = [ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32]
        lib.prodfs_fastread_map.restype = ctypes.c_int
        lib.prodfs_fastread_drop.argtypes = [ctypes.c_uint32]
        lib.prodfs_fastread_drop.restype = None
        lib.prodfs_fastread_stop.restype = None
        slots = min(slots, lib.prodfs_fastread_max_slots())
        ctypes.c_int.in_dll(lib, "prodfs_fastread_max_fds").value = max_fds
        if lib.prodfs_fastread_start(threads) != 0:
            log.warning("cannot start the C read threads: every read goes to the daemon")
            return None
        return cls(lib, slots)

    def map(self, inode: int, sha: str) -> bool:
        """Send ``inode``'s reads to the C path if its payload has a slot; False if it has none."""
        got = self._slots.get(sha)
        if got is None:
            return False
        if self._lib.prodfs_fastread_map(inode, *got):
            return True
        # The library emptied the slot (its file failed a check): free it, `put` may fill it again.
        del self._slots[sha]
        self._free.append(got[0])
        return False

    def put_many(self, items: Sequence[tuple[int, str, bytes, Signature]]) -> int:
        """Give each ``(inode, sha, path, signature)`` a slot for its payload and map the inode to it;
        returns how many inodes were mapped.

        The file at ``path`` was verified with ``signature``: the library opens
        it at its first read, and serves it only while it has that signature.
        One call into the library for them all: a directory's payloads are
        given at once, and a call costs Python more than the library's work.
        """
        if not items:
            return 0
        recs = bytearray(_SLOT_REC.size * len(items))
        paths = bytearray()
        first: dict[str, int] = {}  # sha -> the index of the record of this batch that fills its slot
        plan: list[tuple[str, int] | None] = []
        for i, (inode, sha, path, signature) in enumerate(items):
            earlier = first.get(sha)
            if earlier is not None:  # the same payload under another inode: shares that record's slot
                _SLOT_REC.pack_into(recs, i * _SLOT_REC.size, inode, 0, 0, 0, 0, earlier, _MAP_ONLY)
                plan.append(None)
                continue
            got = self._slots.pop(sha, None)
            if got is not None:
                slot = got[0]
            elif self._free:
                slot = self._free.pop()
            else:
                slot = self._slots.popitem(last=False)[1][0]  # the least recently registered payload
            ino, size, mtime_ns, ctime_ns = signature
            _SLOT_REC.pack_into(recs, i * _SLOT_REC.size, inode, size, ino, mtime_ns, ctime_ns, slot, len(paths))
            paths += path + b"\0"
            first[sha] = i
            plan.append((sha, slot))
        gens = (ctypes.c_int64 * len(items))()
        self._lib.prodfs_fastread_put_many(bytes(recs), len(items), bytes(paths), gens)
        mapped = 0
        for filled, gen in zip(plan, gens):
            if filled is not None:
                sha, slot = filled
                if gen < 0:
                    self._free.append(slot)
                    continue
                self._slots[sha] = (slot, gen)
            mapped += gen >= 0
        return mapped

    def drop(self, sha: str) -> None:
        """The payload left the cache (evicted, found corrupt): its slot no longer serves it."""
        got = self._slots.pop(sha, None)
        if got is not None:
            self._lib.prodfs_fastread_drop(got[0])
            self._free.append(got[0])

    def read_since(self) -> list[str]:
        """The payloads read here since the last call (for the cache's LRU, before it evicts)."""
        reads = self._slot_reads[:]  # one copy into a list, not a ctypes call per slot
        out = []
        for sha, (slot, _) in self._slots.items():
            if reads[slot] != self._seen[slot]:
                self._seen[slot] = reads[slot]
                out.append(sha)
        return out

    def counters(self) -> dict[str, int]:
        return dict(zip(_COUNTERS, self._counters))

    def stop(self) -> None:
        """Answer what is queued and stop the threads: before the session is closed."""
        self._lib.prodfs_fastread_stop()
        self._slots.clear()


class FastLookups:
    """The daemon's side of the C lookup path; `start` returns None when the library is not there."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._answered = ctypes.c_uint64.in_dll(lib, "prodfs_fastlookup_answered")

    @classmethod
    def start(cls) -> FastLookups | None:
        lib = _library()
        if lib is None:
            return None
        lib.prodfs_fastlookup_put_many.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p]
        lib.prodfs_fastlookup_put_many.restype = None
        lib.prodfs_fastlookup_stop.restype = None
        if lib.prodfs_fastlookup_start() != 0:
            return None
        return cls(lib)

    def put_many(self, parent: int, entries: Sequence[tuple[bytes, pyfuse3.EntryAttributes]]) -> None:
        """Answer LOOKUP(parent, name) for each ``(name, entry)`` with the entry the daemon would
        answer it with, from now on: one call into the library for them all."""
        if not entries:
            return
        recs = bytearray(_LOOKUP_REC.size * len(entries))
        names = bytearray()
        for i, (name, a) in enumerate(entries):
            _LOOKUP_REC.pack_into(recs, i * _LOOKUP_REC.size, a.st_ino, a.st_size, a.st_mtime_ns, a.entry_timeout,
                                  a.attr_timeout, a.st_mode, a.st_uid, a.st_gid, a.st_blksize, len(names), len(name))
            names += name
        self._lib.prodfs_fastlookup_put_many(parent, bytes(recs), len(entries), bytes(names))

    @property
    def answered(self) -> int:
        return self._answered.value

    def stop(self) -> None:
        self._lib.prodfs_fastlookup_stop()


_PASSTHROUGH_COUNTERS = ("opens", "opens_by_daemon", "page_cache_opens", "refused", "releases")


class Passthrough:
    """The daemon's side of passthrough opens (`_libpassthrough.c`).

    `want` is called before `pyfuse3.init`: the library then offers
    passthrough to the kernel in its INIT reply. Whether it is in use is
    known once the kernel's INIT has been answered (`active`).
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._active = ctypes.c_int.in_dll(lib, "prodfs_passthrough_active")
        self._errno = ctypes.c_int.in_dll(lib, "prodfs_passthrough_errno")
        self._counters = (ctypes.c_uint64 * 5).in_dll(lib, "prodfs_passthrough_counters")

    @staticmethod
    def want() -> None:
        lib = _zeroopen.library()
        if lib is not None:
            ctypes.c_int.in_dll(lib, "prodfs_passthrough_want").value = 1

    @classmethod
    def start(cls) -> Passthrough | None:
        lib = _library()
        if lib is None or not ctypes.c_int.in_dll(lib, "prodfs_passthrough_want").value:
            return None
        return cls(lib)

    @property
    def active(self) -> bool:
        return bool(self._active.value)

    def why_inactive(self) -> str | None:
        err = self._errno.value
        return f"registering a cache file with the kernel failed: {os.strerror(err)}" if err else None

    def counters(self) -> dict[str, int]:
        return dict(zip(_PASSTHROUGH_COUNTERS, self._counters))
