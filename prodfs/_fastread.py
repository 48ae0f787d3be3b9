"""Reads answered in C, through `_libfastread.c` (built into the zero-open library).

The daemon registers an inode once it knows that the inode's payload is in
the local cache and verified (at lookup, or after serving a read itself);
from then on the library answers that inode's reads on its own threads,
without entering Python, as long as the payload file keeps the signature it
was verified with. Everything else (control files, payloads not fetched or not
verified yet, a file that changed) goes to `prodfs.fs.Operations.read` as
before, which fetches, verifies, or refetches, and registers the inode again.

Registration is by content: a slot per payload (a file of the cache, its own
fd in the library), `slots` of them at most, least recently registered
reused first, and a map from inode to slot.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict

from . import _zeroopen
from ._ledger import Signature

log = logging.getLogger(__name__)

__all__ = ["FastReads"]

_COUNTERS = ("reads", "bytes_read", "fallbacks", "errors")


class FastReads:
    """The daemon's side of the C read path; `start` returns None when the library is not there."""

    def __init__(self, lib: ctypes.CDLL, slots: int) -> None:
        self._lib = lib
        self._slots: OrderedDict[str, tuple[int, int]] = OrderedDict()  # sha -> (slot, generation)
        self._free = list(range(slots - 1, -1, -1))
        self._counters = (ctypes.c_uint64 * 4).in_dll(lib, "prodfs_fastread_counters")

    @classmethod
    def start(cls, threads: int = 4, slots: int = 512) -> FastReads | None:
        lib = _zeroopen.library()
        if lib is None or not _zeroopen.sessions():
            return None
        lib.prodfs_fastread_put.argtypes = [ctypes.c_uint32, ctypes.c_int] + [ctypes.c_uint64] * 4
        lib.prodfs_fastread_put.restype = ctypes.c_int64
        lib.prodfs_fastread_map.argtypes = [ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32]
        lib.prodfs_fastread_map.restype = None
        lib.prodfs_fastread_drop.argtypes = [ctypes.c_uint32]
        lib.prodfs_fastread_drop.restype = None
        lib.prodfs_fastread_stop.restype = None
        slots = min(slots, lib.prodfs_fastread_max_slots())
        if lib.prodfs_fastread_start(threads) != 0:
            log.warning("cannot start the C read threads: every read goes to the daemon")
            return None
        return cls(lib, slots)

    def map(self, inode: int, sha: str) -> bool:
        """Send ``inode``'s reads to the C path if its payload has a slot; False if it has none."""
        got = self._slots.get(sha)
        if got is None:
            return False
        self._lib.prodfs_fastread_map(inode, *got)
        return True

    def put(self, sha: str, fd: int, signature: Signature) -> bool:
        """Give the payload ``sha`` a slot: ``fd`` (duplicated there) was verified with ``signature``."""
        got = self._slots.pop(sha, None)
        if got is not None:
            slot = got[0]
        elif self._free:
            slot = self._free.pop()
        else:
            slot = self._slots.popitem(last=False)[1][0]  # the least recently registered payload
        ino, size, mtime_ns, ctime_ns = signature
        gen = self._lib.prodfs_fastread_put(slot, fd, size, ino, mtime_ns, ctime_ns)
        if gen < 0:
            self._free.append(slot)
            return False
        self._slots[sha] = (slot, gen & 0xFFFFFFFF)
        return True

    def drop(self, sha: str) -> None:
        """The payload left the cache (evicted, found corrupt): its slot no longer serves it."""
        got = self._slots.pop(sha, None)
        if got is not None:
            self._lib.prodfs_fastread_drop(got[0])
            self._free.append(got[0])

    def counters(self) -> dict[str, int]:
        return dict(zip(_COUNTERS, self._counters))

    def stop(self) -> None:
        """Answer what is queued and stop the threads: before the session is closed."""
        self._lib.prodfs_fastread_stop()
        self._slots.clear()
