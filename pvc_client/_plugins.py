"""Commands of ``pvc`` that the layers above the client provide.

The client is the bottom layer: the service and the daemon import it, never
the reverse. Three ``pvc`` commands need code that lives above it, so each is
an entry point of the group ``pvc.plugins`` (in pyproject.toml), looked up
when the command runs:

- ``serve``: ``argv -> exit status``, the service (`pvc_service.server.main`);
- ``import``: ``argv -> exit status``, the bulk loader (`pvc_service._import.main`);
- ``snapshot-of-workspace``: ``async (client, workspace name) -> snapshot``,
  which needs the resolver (`prodfs.resolution.snapshot_workspace`).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from ._errors import PVCError

__all__ = ["GROUP", "plugin"]

GROUP = "pvc.plugins"


def plugin(name: str, *, needs: str) -> Any:
    """The object the entry point ``name`` names, or `PVCError` saying which part is missing."""
    found = metadata.entry_points(group=GROUP, name=name)
    if not found:
        raise PVCError(f"{needs} is not installed here (no {GROUP!r} entry point {name!r})")
    (entry,) = tuple(found)[:1]
    try:
        return entry.load()
    except ImportError as exc:
        raise PVCError(f"{needs} is not installed here ({exc})") from None
