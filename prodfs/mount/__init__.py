"""The mount: a pyfuse3 filesystem in a daemon.

Owns the daemon (`daemon`: start-up, the service feed, offline serving,
shutdown), the pyfuse3 adapter (`fs`, kept thin: each handler maps to the
namespace and the stores, and errors to errno in one place), the inode
namespace (`namespace`), the mount's resolved state (`state`), the control
files (`control`) and the mount options (`options`). It is the one layer
that imports pyfuse3 (through `prodfs.kernel`).

The names from `daemon`, `fs`, `namespace` and `state` load on first use, so
that the command line can read the options without loading libfuse.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .options import MOUNT_FLAGS, add_mount_options, default_cache_dir, expand_o_options, join_time_values, parse_size

if TYPE_CHECKING:
    from .daemon import Daemon, main
    from .fs import Operations
    from .namespace import Namespace
    from .state import MountState

__all__ = [
    "MOUNT_FLAGS", "add_mount_options", "default_cache_dir", "expand_o_options", "join_time_values", "parse_size",
    "Daemon", "main", "Operations", "Namespace", "MountState",
]

_LAZY = {"Daemon": "daemon", "main": "daemon", "Operations": "fs", "Namespace": "namespace", "MountState": "state"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
