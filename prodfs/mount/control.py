"""Snapshots of the control files (``.prodfs/stats.json`` and the rest).

A control file's content changes all the time, yet a reader must see one
consistent document however many reads it takes. The kernel keeps file
contents per inode and does not tell the daemon about opens (see
`prodfs.kernel._zeroopen`), so every lookup of a control file gets a new inode
holding one rendering of its content: the lookup comes with every open (the
entry may not be cached), the reads of that open see that rendering, and the
kernel forgets the inode when the file is closed. Like the files of
``/proc``, but immutable per inode.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ControlSnapshots", "Snapshot", "FIRST_INODE"]

FIRST_INODE = 1 << 48  # far above the namespace's inodes, below zero-open's tag bit


@dataclass(slots=True)
class Snapshot:
    ino: int
    name: str
    data: bytes
    mtime_ns: int = field(default_factory=time.time_ns)
    lookups: int = 1


class ControlSnapshots:
    def __init__(self, render: Callable[[str], bytes]) -> None:
        self._render = render
        self._by_ino: dict[int, Snapshot] = {}
        self._next = itertools.count(FIRST_INODE)

    def take(self, name: str) -> Snapshot:
        """A new inode with the content of control file ``name`` as of now (one kernel lookup)."""
        snap = Snapshot(next(self._next), name, self._render(name))
        self._by_ino[snap.ino] = snap
        return snap

    def get(self, ino: int) -> Snapshot | None:
        return self._by_ino.get(ino)

    def forget(self, ino: int, nlookup: int) -> None:
        snap = self._by_ino.get(ino)
        if snap is not None:
            snap.lookups -= nlookup
            if snap.lookups <= 0:
                del self._by_ino[ino]

    def __len__(self) -> int:
        return len(self._by_ino)

    @staticmethod
    def owns(ino: int) -> bool:
        return ino >= FIRST_INODE
