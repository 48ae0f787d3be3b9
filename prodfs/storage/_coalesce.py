"""Coalesce concurrent misses: many tasks asking for the same key share one call.

cachetools caches are neither async- nor task-aware, so a miss in a cold
cache hit by 64 readers at once would otherwise become 64 requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

__all__ = ["Coalescer"]


class _Call(Generic[T]):
    __slots__ = ("done", "result", "error", "waiters")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waiters = 0


class Coalescer(Generic[T]):
    """``await c.run(key, fn)``: the first caller runs ``fn()``, later callers for
    the same key wait for its outcome (result or exception)."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[T]] = {}
        self.coalesced = 0  # how many callers were spared a call

    def in_flight(self, key: Hashable) -> bool:
        return key in self._calls

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        call = self._calls.get(key)
        if call is not None:
            self.coalesced += 1
            call.waiters += 1
            await call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[return-value]
        call = _Call()
        self._calls[key] = call
        try:
            call.result = await fn()
            return call.result
        except BaseException as exc:
            # Waiters get the same failure; cancellation of the leader must not
            # be re-raised in waiters as a Cancelled from another scope.
            call.error = exc if not isinstance(exc, trio.Cancelled) else OSError(5, "cancelled")
            raise
        finally:
            del self._calls[key]
            call.done.set()
