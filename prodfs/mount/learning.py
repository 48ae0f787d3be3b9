"""What a mount learns from the service as it goes: products by name, closures, root pages.

A mount starts with the closure of its context's roots, not the store
(`prodfs.mount.state`). This class is the one place that asks the service
for more:

- `name`: the first lookup of a name of a product the mount does not know
  is one ``POST /closure`` with ``depth: 0`` (the product alone, as of the
  pin), shared by every lookup of that name meanwhile. "No such product" is
  kept (``MountState.missing``) until the feed shows the name.
- `closures`: products a change brought into the roots' closure (a new
  version depending on something never loaded), with everything they may
  depend on, before the resolver walks there.
- `root_page`: a page of the root's names (``GET /products``), so that
  listing ``/p`` never holds the store's names.

While the service is known to be unreachable (the mount is degraded), `name`
and `root_page` fail at once instead of waiting for a timeout each: lookups
in the root are serialized by the kernel, so one slow answer holds up all,
and the root then lists what the mount knows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from pvc_client import PVCClient, Unavailable, format_time, from_micros

from ..storage._coalesce import Coalescer
from .state import MountState

log = logging.getLogger(__name__)

__all__ = ["Learner"]


class Learner:
    def __init__(self, client: PVCClient, state: MountState, *, degraded: Callable[[], str | None],
                 changed: Callable[[], None], root_page: int = 1000) -> None:
        self.client = client
        self.state = state
        self._degraded = degraded
        self._changed = changed  # something new to save for offline starts
        self._names: Coalescer[None] = Coalescer()
        self.root_page_size = root_page
        self.learned = 0  # products added by name
        self.requests = 0

    @property
    def _as_of(self) -> str | None:
        pin = self.state.pin_us
        return format_time(from_micros(pin)) if pin is not None else None

    def _reachable(self, what: str) -> None:
        why = self._degraded()
        if why is not None:
            raise Unavailable(f"{what}: PVC cannot be asked now ({why})")

    async def name(self, pri: str) -> None:
        """Learn the product ``pri`` names (or that nothing does); raises `Unavailable`."""
        self._reachable(f"{pri} is not known to this mount")
        await self._names.run(pri, lambda: self._name(pri))

    async def _name(self, pri: str) -> None:
        state = self.state
        if state.graph.get(pri) is not None or pri in state.missing:
            return  # learned while this call waited its turn
        answer = await self._ask([pri], depth=0)
        added = state.learned(answer, complete=False)
        self.learned += len(added)
        if added:
            log.debug("learned %s", ", ".join(added))
            self._changed()

    async def closures(self, pris: Iterable[str]) -> list[str]:
        """Load the closures of ``pris`` (unknown ones are kept as missing); return what was added."""
        wanted = sorted(set(pris))
        if not wanted:
            return []
        answer = await self._ask(wanted, depth=None)
        added = self.state.learned(answer, complete=True)
        if added:
            log.info("loaded the closure of %s: %d products", ", ".join(wanted), len(added))
            self._changed()
        return added

    async def _ask(self, names: list[str], depth: int | None) -> dict:
        # The feed skips events of products the mount does not know: an answer
        # made before events the feed has already gone past would miss them.
        # Such an answer is asked for again (it rarely is: the feed is behind
        # the service, not ahead of it); in the end the newest one is taken.
        for _ in range(3):
            self.requests += 1
            answer = await self.client.closure(names, as_of=self._as_of, depth=depth, missing="omit")
            if not self.state.behind(answer):
                break
            log.debug("the answer for %s is older than the feed: asking again", ", ".join(names))
        return answer

    async def root_page(self, after: str | None) -> tuple[list[str], str | None]:
        """A page of the names the root lists, and the ``after`` of the next (None at the end)."""
        self._reachable("the root's names")
        self.requests += 1
        page, following = await self.client.product_page(as_of=self._as_of, after=after, limit=self.root_page_size)
        return [p["pri"] for p in page], following
