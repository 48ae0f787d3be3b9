"""Kernel fast paths: requests answered without entering Python.

Owns the C library, one extension (`_libzeroopen`) built from one file per
job: ``_libzeroopen.c`` (the session, zero-message opens),
``_libpassthrough.c`` (the device's reader, passthrough opens),
``_libfastread.c`` (reads), ``_libfastlookup.c`` (lookups) and
``_libslots.c`` (the verified payload files the read path and passthrough
borrow), each calling only files after it in that list, their contract in
``_libprodfs.h`` (see docs/kernel.md). And its ctypes side:
loading the library and zero-message opens (`_zeroopen`, which must load
before pyfuse3, hence `_fuse`), reads and lookups answered in C and
passthrough (`_fastpath`), and the readahead of the mount's backing device
(`_readahead`). Each path can be turned off (``--no-zero-open``,
``--no-fast-path``, ``--no-passthrough``) and then falls back to the
daemon's Python handlers.
"""

from __future__ import annotations

from ._fuse import pyfuse3
from ._fastpath import PASSTHROUGH_BIT, FastLookups, FastReads, Passthrough
from ._readahead import READ_AHEAD_KB, raise_readahead
from ._zeroopen import INODE_BIT
from ._zeroopen import sessions as zero_open_sessions
from ._zeroopen import why_unavailable as why_zero_open_unavailable

__all__ = [
    "pyfuse3", "PASSTHROUGH_BIT", "FastLookups", "FastReads", "Passthrough", "READ_AHEAD_KB", "raise_readahead",
    "INODE_BIT", "zero_open_sessions", "why_zero_open_unavailable",
]
