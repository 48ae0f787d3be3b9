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

    def claim(self, key: Hashable) -> bool:
        """Take ``key`` as in flight for work done elsewhere (a batch that loads it along
        with another): `run` for it waits until `settle`. False if it is in flight already."""
        if key in self._calls:
            return False
        self._calls[key] = _Call()
        return True

    def settle(self, key: Hashable, result: T | None = None, error: BaseException | None = None) -> None:
        """End the call of a claimed ``key``: its waiters get ``result`` (or ``error``)."""
        call = self._calls.pop(key)
        call.result, call.error = result, error
        call.done.set()

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        call = self._calls.get(key)
        if call is not None:
            self.coalesced += 1
            call.waiters += 1
            await call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[return-value]
        self.claim(key)
        try:
            result = await fn()
        except BaseException as exc:
            # Waiters get the same failure; cancellation of the leader must not
            # be re-raised in waiters as a Cancelled from another scope.
            self.settle(key, error=exc if not isinstance(exc, trio.Cancelled) else OSError(5, "cancelled"))
            raise
        self.settle(key, result)
        return result
