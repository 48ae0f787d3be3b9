"""Cycles in the "could depend on" graph: finding them, and settling them.

Outside cycles every product is decided once, after all its possible
dependents (`prodfs.resolution._resolve`). Inside a strongly connected component
choices feed back, so the component is iterated in synchronous rounds: a
round reaches and decides every member from the previous round's choices
alone, so the sequence of rounds depends on nothing but the data (not on the
order of records). When rounds repeat without settling, the members whose
version changes along the repetition are frozen (no version, a conflict) and
the rounds start again; each restart freezes at least one more member, so
this ends.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ._records import Conflict, Request, sort_key

__all__ = ["components", "Component", "Settler"]

# member -> (number, rule, valid requests, every incoming request) in one round
State = dict[str, tuple[int | None, str, tuple[Request, ...], list[Request] | None]]


def components(nodes: Iterable[str], succ: Mapping[str, Iterable[str]]) -> list[tuple[list[str], bool]]:
    """Tarjan's strongly connected components of ``nodes`` (edges leaving
    them ignored), dependents first, each with "has a cycle"."""
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[tuple[list[str], bool]] = []
    counter = 0
    for start in sorted(inside):
        if start in index:
            continue
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(succ[start]))]
        while work:
            v, it = work[-1]
            for w in it:
                if w not in inside:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ[w])))
                    break
                if w in on_stack and index[w] < low[v]:
                    low[v] = index[w]
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    if low[v] < low[u]:
                        low[u] = low[v]
                if low[v] == index[v]:
                    members: list[str] = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        members.append(w)
                        if w == v:
                            break
                    out.append((members, len(members) > 1 or v in succ[v]))
    out.reverse()
    return out


def _signature(state: State) -> tuple[tuple[str, int | None], ...]:
    return tuple(sorted((m, got[0]) for m, got in state.items()))


class Settler(Protocol):
    """What a component needs of the resolver that hands it over (`_resolve.Resolver`).

    ``vis`` is the resolver's view of a product at the pin; a component only
    passes it back."""

    sname: str
    reqs: dict[str, list[Request]]
    vis_cache: dict[str, Any]
    senders: dict[str, set[str]]

    def decide(self, pri: str, vis: Any, incoming: list[Request] | None
               ) -> tuple[int | None, str, tuple[Request, ...]]: ...

    def record(self, pri: str, vis: Any, number: int | None, rule: str, valid: tuple[Request, ...],
               incoming: list[Request] | None, cycle: Conflict | None = None) -> None: ...

    def emit(self, pri: str, vis: Any, number: int, hops: int, root: int,
             within: set[str] | None = None) -> list[str]: ...

    def nearest(self, pri: str, incoming: list[Request] | None) -> tuple[int, int]: ...


class Component:
    """A component with cycles, decided once all of its outside dependents are."""

    def __init__(self, resolver: Settler, members: list[str]) -> None:
        self.r = resolver
        self.members = set(members)
        self.order = sorted(members)
        # requests from outside the component are final by now
        self.external = {m: resolver.reqs.pop(m, None) for m in self.order}
        self.frozen: dict[str, list[int | None]] = {}  # member -> versions it went through
        self.cap = max(64, 4 * len(self.order))

    def settle(self) -> None:
        """Iterate to a fixed point, record the members, pass requests on."""
        while True:
            state, dist, changing = self._iterate()
            if not changing:
                break
            self.frozen.update(changing)
        r = self.r
        for m in self.order:
            got = state.get(m)
            if got is None:
                if m in self.frozen:  # it left the graph once frozen: still say why
                    r.conflicts.append(self._conflict(m, ()))
                continue
            number, rule, valid, incoming = got
            # who asked, members included (their requests to each other are not emitted)
            senders = r.senders.setdefault(m, set())
            senders.update(q.dependent.rpartition("@")[0] for q in incoming or () if q.dependent is not None)
            cycle = None
            if m in self.frozen:
                cycle = self._conflict(m, tuple(r.root_reqs.get(m) or ()) + valid)
            vis = r.vis_cache[m]
            r.record(m, vis, number, rule, valid, incoming, cycle)
            if number is not None:
                r.emit(m, vis, number, dist[m][0], dist[m][1], within=self.members)

    def _iterate(self) -> tuple[State, dict[str, tuple[int, int]], dict[str, list[int | None]]]:
        """Rounds from nothing chosen: (state, distances, members to freeze).

        Nothing to freeze means the state is a fixed point.
        """
        state: State = {}
        # hashes only, so a long run on a big component stays small; a
        # repetition is confirmed by replaying it before anything is frozen
        seen: dict[int, int] = {hash(_signature(state)): 0}
        step = 0
        while True:
            new, dist = self._round(state)
            step += 1
            if _signature(new) == _signature(state):
                return new, dist, {}
            previous, state = state, new
            key = hash(_signature(state))
            if key in seen:
                changing = self._orbit(state, step - seen[key])
                if changing:
                    return state, dist, changing
            elif step > self.cap:
                # not settled and no repetition seen yet: give up on what
                # moved last (or on everything), which still makes progress
                moved = {m: [previous[m][0], got[0]] for m, got in state.items()
                         if m in previous and m not in self.frozen and previous[m][0] != got[0]}
                return state, dist, moved or {m: [] for m in self.order if m not in self.frozen}
            seen[key] = step

    def _round(self, state: State) -> tuple[State, dict[str, tuple[int, int]]]:
        """Reach and decide every member from the choices of ``state``."""
        r = self.r
        # nearest distances through those choices: Dijkstra on (hops, root),
        # every edge adds a hop and keeps the root
        heap: list[tuple[int, int, str]] = []
        for m in self.order:
            if self.external[m] is not None or m in r.root_index:
                h, root = r.nearest(m, self.external[m])
                heap.append((h, root, m))
        heapq.heapify(heap)
        dist: dict[str, tuple[int, int]] = {}
        internal: dict[str, list[Request]] = {}
        canonical = r.graph.canonical
        while heap:
            h, root, m = heapq.heappop(heap)
            if m in dist:
                continue
            dist[m] = (h, root)
            prev = state.get(m)
            if prev is None or prev[0] is None:
                continue
            for d in r.vis_cache[m].versions[prev[0]].dependencies:
                t = canonical(d.pri)
                if t is not None and t in self.members:
                    internal.setdefault(t, []).append(Request(t, d.number, f"{m}@{prev[0]}", h + 1, root))
                    if t not in dist:
                        heapq.heappush(heap, (h + 1, root, t))
        new: State = {}
        for m in self.order:
            if m not in dist:
                continue
            incoming = (self.external[m] or []) + internal.get(m, [])
            vis = r.vis_cache[m]
            if m in self.frozen:
                valid = tuple(sorted((q for q in incoming if q.number in vis.versions), key=sort_key))
                new[m] = (None, "conflict", valid, incoming or None)
            else:
                number, rule, valid = r.decide(m, vis, list(incoming) or None)
                new[m] = (number, rule, valid, incoming or None)
        return new, dist

    def _orbit(self, state: State, period: int) -> dict[str, list[int | None]]:
        """Members whose version changes along a repetition of ``period`` rounds.

        Empty when replaying does not come back to ``state`` (a hash
        collision: nothing repeats yet). Along a true repetition some member
        always changes its version: were every version fixed, the reached
        members would be too.
        """
        start = _signature(state)
        values: dict[str, list[int | None]] = {}
        for _ in range(period):
            for m, got in state.items():
                seen = values.setdefault(m, [])
                if got[0] not in seen:
                    seen.append(got[0])
            state, _dist = self._round(state)
        if _signature(state) != start:
            return {}
        return {m: v for m, v in values.items() if len(v) > 1}

    def _conflict(self, pri: str, requests: tuple[Request, ...]) -> Conflict:
        name = self.r.sname
        shown = ", ".join("none" if n is None else f"@{n}" for n in self.frozen[pri]) or "a changing version"
        return Conflict(
            pri, requests, None, name,
            f"{pri}: choices do not settle around a cycle of dependencies ({name} picks {shown} in turn) "
            "-> no version",
        )
