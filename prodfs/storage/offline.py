"""What a fixed mount loaded, kept on disk so that it can start again without PVC.

A snapshot mount, or a mount pinned to an absolute time, resolves against
data that does not change: the snapshot record and the index as of its pin.
Render nodes must be able to remount while the service is away, so every such
mount saves what it loaded under ``CACHE/contexts/`` and, when PVC cannot be
reached at mount time, starts from the saved copy instead (degraded). Version
manifests and payloads are already cached under ``CACHE/`` by content.
``prodfs prefetch`` saves a snapshot's context the same way, so a node
prepared by it alone can start the snapshot offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["SavedContexts", "snapshot_key", "pin_key"]

log = logging.getLogger(__name__)

FORMAT = 1


def snapshot_key(snapshot_id: str) -> str:
    """The key of a snapshot's context (its record and the index as of its pin)."""
    return f"snapshot:{snapshot_id}"


def pin_key(pin_us: int) -> str:
    """The key of an ad hoc context pinned to an absolute time (the index as of the pin)."""
    return f"pin:{pin_us}"


class SavedContexts:
    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(cache_dir, "contexts")

    def _path(self, key: str) -> Path:
        # keys hold user text (snapshot ids, times): the file name is a hash of them
        return self.dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def save(self, key: str, doc: dict[str, Any]) -> None:
        """Keep ``doc`` for ``key``; a failure (disk full) only costs the offline start."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"format": FORMAT, "key": key, **doc}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot save the context for offline starts (%s): %s", key, exc)
            try:
                tmp.unlink()
            except (OSError, UnboundLocalError):
                pass

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("saved context %s is unusable: %s", path, exc)
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key:
            log.warning("saved context %s is not one this daemon wrote for %s: ignored", path, key)
            return None
        return doc
