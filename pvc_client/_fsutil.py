"""Small filesystem helpers shared by the service's blob store and the daemon's cache."""

from __future__ import annotations

import ctypes
import os

__all__ = ["syncfs"]


def _load_syncfs():  # noqa: ANN202 - a ctypes function, or None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_libc_syncfs = _load_syncfs()


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the filesystem holding the directory ``path``: one call makes many files written durable.

    Linux's syncfs(2); where it is missing or fails, sync(2) (every filesystem).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc_syncfs is None or _libc_syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
