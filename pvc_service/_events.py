"""The change feed: writing events inside transactions, reading them, waking waiters.

Events are rows whose autoincrement id is the cursor. They are written in the
same transaction as the change they describe, so the feed never shows a change
that did not happen nor misses one that did. Waiting readers are woken by an
in-process `Notifier` after each commit, and re-read the database on a timer
as well, for events committed by another service process on the same database.
"""

from __future__ import annotations

from typing import Any

import anyio
from pvc_client import format_time, from_micros
from sqlalchemy import Connection, func, select

from ._schema import events

__all__ = ["record_event", "events_after", "current_cursor", "event_json", "Notifier"]

EVENT_KINDS = ("publish", "label", "rename", "workspace", "snapshot")


def record_event(conn: Connection, kind: str, time_us: int, pri: str | None, **data: Any) -> int:
    assert kind in EVENT_KINDS
    result = conn.execute(events.insert().values(time_us=time_us, kind=kind, pri=pri, data=data))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


# built once: every graph answer asks it (see `_names.Prepared`)
_CURSOR = select(func.coalesce(func.max(events.c.id), 0))


def current_cursor(conn: Connection) -> int:
    return int(conn.execute(_CURSOR).scalar_one())


def event_json(row: Any) -> dict[str, Any]:
    base = {"id": row.id, "time": format_time(from_micros(row.time_us)), "kind": row.kind, "pri": row.pri}
    return {**row.data, **base}  # the kind's fields never shadow the cursor


def events_after(conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(events).where(events.c.id > after).order_by(events.c.id).limit(limit)
    ).all()
    return [event_json(r) for r in rows]


class Notifier:
    """Wakes long-polling readers after a commit. Lives on the event loop.

    A reader takes `current()` *before* querying, then waits on it: a commit
    that lands between the query and the wait has already set that event, so
    no wake-up is lost.
    """

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self.waiters = 0  # readers waiting right now (for metrics and tests)

    def current(self) -> anyio.Event:
        if self._event is None:
            self._event = anyio.Event()
        return self._event

    async def wait(self, event: anyio.Event, timeout: float) -> None:
        """Wait until ``event`` (from `current`) is set, or ``timeout`` seconds."""
        self.waiters += 1
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            self.waiters -= 1

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None
