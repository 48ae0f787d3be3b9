"""Loading the library, and zero-message opens (its `_libzeroopen.c`).

The library is one extension, `prodfs.kernel._libzeroopen`, built from the
C files of this package (their contract in `_libprodfs.h`, what each
answers in docs/kernel.md); this module loads it, and the C read, lookup
and passthrough paths in it are driven from `prodfs.kernel._fastpath`.

Answering OPEN and OPENDIR with ENOSYS makes the kernel stop sending them (and
RELEASE, RELEASEDIR) for the rest of the mount, keep file contents across
opens and keep directory listings: a warm ``open``+``read``+``close`` or a
warm ``ls`` then never reaches the daemon. pyfuse3 alone cannot use this,
because the READ and READDIRPLUS that follow carry no handle and pyfuse3 does
not pass on the inode; the library puts the inode into the handle
(`INODE_BIT` marks it). It replaces libfuse's `fuse_session_new` for pyfuse3
and so must be loaded before pyfuse3 is imported: `prodfs.kernel._fuse` does that.

This suits ProdFS because what an inode serves never changes: a version's
file or directory keeps its inode, a new version gets new ones, and the
control files give every lookup a new inode (see `prodfs.mount.fs`). Without the
library (not built, or loaded too late) `sessions` is False and opens and
listings go to the daemon as usual; ``--no-zero-open`` keeps the library
(and the C paths) but has the daemon answer opens and listings itself.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import sys
from pathlib import Path

__all__ = ["load", "library", "sessions", "why_unavailable", "INODE_BIT"]

INODE_BIT = 1 << 62  # PRODFS_INODE_BIT in _libprodfs.h; file handles stay far below it

_lib: ctypes.CDLL | None = None
_why = "not loaded"


def _library_path() -> Path | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_libzeroopen{suffix}"
        if path.exists():
            return path
    return None


def load() -> bool:
    """Load the library ahead of pyfuse3; True when it is in place."""
    global _lib, _why
    if _lib is not None:
        return True
    if "pyfuse3" in sys.modules:
        # pyfuse3's references to libfuse are bound already: the library would not be used.
        _why = "pyfuse3 was imported before prodfs.kernel._fuse"
        return False
    path = _library_path()
    if path is None:
        _why = "prodfs/kernel/_libzeroopen was not built (installing needs gcc and libfuse3-dev)"
        return False
    try:
        lib = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    except OSError as exc:
        _why = f"cannot load {path.name}: {exc}"
        return False
    if not ctypes.c_int.in_dll(lib, "prodfs_zeroopen_ready").value:
        _why = "libfuse3's fuse_session_new was not found"
        return False
    _lib = lib
    return True


def library() -> ctypes.CDLL | None:
    """The loaded library (it also holds the C read and lookup paths, `prodfs.kernel._fastpath`)."""
    return _lib


def sessions() -> bool:
    """True once `pyfuse3.init` created its session through the library."""
    return _lib is not None and bool(ctypes.c_int.in_dll(_lib, "prodfs_zeroopen_sessions").value)


def why_unavailable() -> str | None:
    if sessions():
        return None
    return _why if _lib is None else "pyfuse3.init has not run"
