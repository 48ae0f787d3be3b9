"""The root's listing, a page of the service's names at a time.

``ls /p`` of a store of a million products must neither hold a million
names nor make the mount learn every product. The root lists the names the
service has (``GET /products`` pages, as of the pin); each page's entries
are made when the kernel reads that far, and only a few pages are kept.
Positions (READDIR offsets) are counted from the listing's start: the first
page is asked again when the kernel seeks back past what is kept.

When the service cannot be asked for the first page, the listing is what
the mount knows (the names it learned), so a degraded mount still lists
what it serves. A later page that cannot be had is an error: a listing is
never silently cut short.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from pvc_client import Unavailable

__all__ = ["RootListing"]

Entry = tuple[bytes, Any]  # (name, pyfuse3.EntryAttributes)

_KEPT_PAGES = 16


class RootListing:
    """One generation of the root's listing; the adapter makes a new one when the root changes.

    ``fetch(after)`` answers a page of names and the ``after`` of the next
    one (None at the end); ``make(names)`` their entries; ``head`` the
    entries before the names (``.prodfs``), ``tail()`` those after them
    (outputs not in the store yet); ``known()`` the names the mount knows,
    for when the service cannot be asked.
    """

    def __init__(self, fetch: Callable[[str | None], Awaitable[tuple[list[str], str | None]]],
                 make: Callable[[list[str]], Awaitable[list[Entry]]], head: list[Entry],
                 tail: Callable[[], Awaitable[list[Entry]]], known: Callable[[], list[str]]) -> None:
        self._fetch, self._make, self._tail, self._known = fetch, make, tail, known
        # page k starts at position starts[k] and is fetched with afters[k]
        self._starts: list[int] = [len(head)]
        self._afters: list[str | None] = [None]
        self._pages: OrderedDict[int, list[Entry]] = OrderedDict()
        self._head = head
        self._end: int | None = None  # the position after the last name, once known
        self._tail_entries: list[Entry] | None = None
        self.offline = False  # listed from what the mount knows

    async def at(self, pos: int) -> list[Entry]:
        """The entries from ``pos`` to the end of the part that holds it ([] past the end)."""
        if pos < len(self._head):
            return self._head[pos:]
        while True:
            k = bisect.bisect_right(self._starts, pos) - 1
            if self._end is not None and pos >= self._end:
                tail = await self._tails()
                return tail[pos - self._end:]
            page = await self._page(k)
            start = self._starts[k]
            if pos < start + len(page):
                return page[pos - start:]
            # past this page: its fetch found the end, or where the next one starts

    async def _page(self, k: int) -> list[Entry]:
        page = self._pages.get(k)
        if page is not None:
            self._pages.move_to_end(k)
            return page
        if self.offline:
            names, following = self._known(), None
        else:
            try:
                names, following = await self._fetch(self._afters[k])
            except Unavailable:
                if k or len(self._starts) > 1:
                    raise
                self.offline = True
                names, following = self._known(), None
        page = await self._make(names)
        start = self._starts[k]
        if k + 1 == len(self._starts):
            if following is None:
                self._end = start + len(page)
            else:
                self._starts.append(start + len(page))
                self._afters.append(following)
        self._pages[k] = page
        while len(self._pages) > _KEPT_PAGES:
            self._pages.popitem(last=False)
        return page

    async def _tails(self) -> list[Entry]:
        if self._tail_entries is None:
            self._tail_entries = await self._tail()
        return self._tail_entries
