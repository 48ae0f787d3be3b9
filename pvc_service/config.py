"""The service configuration, shared by ``create_app`` and the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._auth import Token

__all__ = ["ServiceConfig", "API_PREFIX"]

# every endpoint lives under this path (docs/api.md)
API_PREFIX = "/api/v1"


@dataclass(slots=True)
class ServiceConfig:
    """What a service instance needs. Only ``data_dir`` is required.

    ``db_url`` None means SQLite at ``data_dir/pvc.sqlite3``; blobs always live
    under ``data_dir/blobs``. ``tokens`` None means an open service (no auth).
    """

    data_dir: Path
    db_url: str | None = None
    tokens: dict[str, Token] | None = None
    # request bodies other than blob uploads (a million-entry manifest is ~150 MB)
    max_body_bytes: int = 512 * 1024 * 1024
    max_blob_bytes: int = 64 * 1024**3
    # how often a waiting /events request re-reads the database, for events
    # written by another service process sharing the same PostgreSQL
    event_poll_seconds: float = 1.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

