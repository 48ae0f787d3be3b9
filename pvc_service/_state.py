"""What the routes share: configuration, database, blob store, metrics, notifier."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

from ._blobs import BlobStore
from ._db import Database
from ._events import Notifier
from ._metrics import Metrics
from .config import ServiceConfig

__all__ = ["ServiceState", "state", "run_db", "run_read"]

T = TypeVar("T")


@dataclass(slots=True)
class ServiceState:
    config: ServiceConfig
    db: Database
    blobs: BlobStore
    metrics: Metrics
    notifier: Notifier
    # set at shutdown so that long-polls answer at once instead of holding it up
    stopping: bool = False


def state(request: Request) -> ServiceState:
    return request.app.state.pvc  # type: ignore[no-any-return]


async def run_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking database work in a worker thread (the event loop stays free)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def run_read(request: Request, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(conn, *args)`` in a read transaction, in a worker thread."""
    db = state(request).db

    def call() -> T:
        with db.read() as conn:
            return work(conn, *args)

    return await run_db(call)
