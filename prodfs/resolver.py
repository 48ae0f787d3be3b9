"""The resolver: which version each versionless product name means in a context.

Pure logic over a `Graph`; no I/O. See docs/strategies.md for the rules.

The roots, and the dependencies of the chosen versions followed from the
roots (and only through chosen versions), form the workspace's graph. Inside
it every product gets one version: an override if there is one, else the
root's version for a root, else what the strategy picks from the requests of
the chosen versions that depend on it. Choosing a version changes whose
dependencies count, so this is a fixed point. It is computed without global
iteration: products are visited in topological order of the strongly
connected components of the "could depend on" graph (the dependencies of
every version that could still be chosen), so when a product is decided all
of its possible dependents already are. Only inside a cycle of products do
choices feed back; there the component is iterated synchronously (every
product from the previous round's choices, so record order cannot matter),
and a product whose choice keeps changing is reported as a conflict and
left without a version, which is what guarantees termination.

Products outside the graph resolve on demand, by label preference then the
newest version, as of the pin.
"""

from __future__ import annotations

import gc
import heapq
from operator import attrgetter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .context import Context
from .graph import Graph, ProductInfo, VersionInfo
from .strategies import ChoiceEnv, Strategy, UnknownStrategy, get_strategy, preferred_version

__all__ = ["Request", "Conflict", "Choice", "Resolution", "resolve", "diff"]

# how many requests a conflict message spells out before summarising the rest
_MESSAGE_REQUESTS = 8


@dataclass(frozen=True, slots=True)
class Request:
    """A version of a product asked for in the graph.

    ``dependent`` is ``PRI@N`` of the chosen version that asked, or None for a
    root. ``hops`` is the length of the path from a root to the requested
    product through that dependent (0 for a root); ``root`` is the index in the
    context's roots of the root that path starts from (the earliest one when
    several are equally near).
    """

    pri: str
    number: int
    dependent: str | None
    hops: int
    root: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"pri": self.pri, "number": self.number, "dependent": self.dependent,
                "hops": self.hops, "root": self.root}


@dataclass(frozen=True, slots=True)
class Conflict:
    """Dependents (or roots) that disagree on a product, and what was done."""

    pri: str
    requests: tuple[Request, ...]
    chosen: int | None
    strategy: str  # the strategy name, or "root"/"override" when those decided
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"pri": self.pri, "requests": [r.to_json() for r in self.requests],
                "chosen": self.chosen, "strategy": self.strategy, "message": self.message}


@dataclass(frozen=True, slots=True)
class Choice:
    """The version a product resolves to, with everything needed to explain it.

    ``rule`` is one of ``override``, ``root``, ``root-label:NAME``,
    ``strategy:NAME``, ``preference:LABEL``, ``newest``, ``conflict``.
    ``detail`` adds how a default was found (``preference:approved``) when the
    rule alone does not say.
    """

    pri: str
    number: int | None
    rule: str
    requests: tuple[Request, ...] = ()
    candidates: tuple[int, ...] = ()
    in_graph: bool = False
    conflict: Conflict | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pri": self.pri, "number": self.number, "rule": self.rule, "detail": self.detail,
            "requests": [r.to_json() for r in self.requests], "candidates": list(self.candidates),
            "in_graph": self.in_graph, "conflict": None if self.conflict is None else self.conflict.to_json(),
        }


class _Vis:
    """A product as seen at the pin: visible versions and labels on them."""

    __slots__ = ("product", "numbers", "versions", "labels", "_env")

    def __init__(self, product: ProductInfo, pin_us: int | None) -> None:
        self.product = product
        versions = product.versions
        if pin_us is not None:
            for v in versions.values():
                if v.created_us > pin_us:
                    versions = {n: v for n, v in versions.items() if v.created_us <= pin_us}
                    break
        self.versions: Mapping[int, VersionInfo] = versions
        self.numbers: tuple[int, ...] = tuple(sorted(versions))
        labels = product.labels
        # a label may point at a version the pin hides (the graph is newer
        # than the pin): best effort is to ignore such a label
        for n in labels.values():
            if n not in versions:
                labels = {k: n for k, n in labels.items() if n in versions}
                break
        self.labels: Mapping[str, int] = labels
        self._env: ChoiceEnv | None = None


class Resolution:
    """The outcome of `resolve`: choices of the graph, conflicts, errors.

    ``choices`` holds the products of the workspace's graph (``in_graph``);
    `choose` also answers for any other product, on demand. The resolution
    keeps a reference to the graph for that: it answers for the graph as it
    is when asked, so resolve again after changing the graph.
    """

    def __init__(
        self,
        graph: Graph,
        context: Context,
        choices: dict[str, Choice],
        conflicts: list[Conflict],
        errors: list[str],
        overrides: Mapping[str, int | None],
    ) -> None:
        self.graph = graph
        self.context = context
        self.choices = choices
        self.conflicts = conflicts
        self.errors = errors
        self._overrides = overrides
        self._memo: dict[str, Choice | None] = {}

    def choose(self, pri: str) -> Choice | None:
        """The choice for a PRI or alias; None when unknown or nothing is visible."""
        canonical = self.graph.canonical(pri)
        if canonical is None:
            return None
        found = self.choices.get(canonical)
        if found is not None:
            return found
        if canonical in self._memo:
            return self._memo[canonical]
        vis = _Vis(self.graph.products[canonical], self.context.pin_us)
        choice: Choice | None
        if not vis.numbers:
            choice = None
        elif canonical in self._overrides:
            choice = Choice(canonical, self._overrides[canonical], "override", candidates=vis.numbers)
        else:
            number, rule = preferred_version(vis.numbers, vis.labels, self.context.prefer)
            choice = Choice(canonical, number, rule, candidates=vis.numbers)
        self._memo[canonical] = choice
        return choice

    def explain(self, pri: str) -> str:
        """A human account of one product's choice (for ``prodfs why``)."""
        lines = [f"context: {self.context.describe()}"]
        c = self.choose(pri)
        if c is None:
            lines.append(f"{pri}: unknown, or no version visible" + (" at the pin" if self.context.pin_us else ""))
            return "\n".join(lines)
        lines.append(f"product: {c.pri}" + ("" if c.pri == pri else f" (named {pri})"))
        lines.append("in the workspace graph: " + ("yes" if c.in_graph else "no (resolved by preference)"))
        lines.append("candidates: " + (", ".join(map(str, c.candidates)) or "(none)"))
        for r in c.requests:
            who = "root" if r.dependent is None else r.dependent
            lines.append(f"  {who} asks for @{r.number} ({r.hops} hops from root {r.root})")
        lines.append(f"rule: {c.rule}" + (f" ({c.detail})" if c.detail else ""))
        if c.conflict is not None:
            lines.append(f"conflict: {c.conflict.message}")
        lines.append("result: " + (f"{c.pri}@{c.number}" if c.number is not None else "no version (EIO)"))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "context": self.context.to_json(),
            "choices": {p: self.choices[p].to_json() for p in sorted(self.choices)},
            "conflicts": [c.to_json() for c in self.conflicts],
            "errors": list(self.errors),
        }


# the order requests are kept and shown in; dependents are never None here
# (root requests are kept apart), and a C-level key keeps sorting cheap
_sort_key = attrgetter("hops", "root", "dependent", "number")


# member -> (number, rule, valid requests, all incoming requests) in one round
_State = dict[str, tuple[int | None, str, tuple[Request, ...], list[Request] | None]]


def _signature(state: _State) -> tuple[tuple[str, int | None], ...]:
    return tuple(sorted((m, got[0]) for m, got in state.items()))


def _changed(old: _State, new: _State, frozen: Mapping[str, object]) -> dict[str, list[int | None]]:
    """Unfrozen members present in both states with different versions."""
    return {
        m: [old[m][0], got[0]]
        for m, got in new.items()
        if m in old and m not in frozen and old[m][0] != got[0]
    }


class _Resolver:
    def __init__(self, graph: Graph, context: Context) -> None:
        self.graph = graph
        self.ctx = context
        self.pin = context.pin_us
        self.errors: set[str] = set()
        self.vis_cache: dict[str, _Vis] = {}
        try:
            self.strategy: Strategy = get_strategy(context.strategy)
            self.sname = context.strategy
        except UnknownStrategy as exc:
            # never silently serve what another rule would pick: be strict,
            # so only the products dependents disagree on lose their version
            self.errors.add(f"{exc}; resolving as 'strict'")
            self.strategy = get_strategy("strict")
            self.sname = "strict"
        self.srule = f"strategy:{self.sname}"
        self.ignores = bool(getattr(self.strategy, "ignores_requests", False))
        # canonical PRI -> (number, rule) for roots and overrides
        self.fixed: dict[str, tuple[int | None, str]] = {}
        self.overrides: dict[str, int | None] = {}
        self.root_reqs: dict[str, list[Request]] = {}
        self.root_index: dict[str, int] = {}  # canonical root -> its first index in the context
        # requests from decided dependents, and (hops, root) of the nearest one
        self.reqs: dict[str, list[Request]] = {}
        self.pre: dict[str, int | None] = {}  # choices known before requests
        self.choices: dict[str, Choice] = {}
        self.conflicts: list[Conflict] = []

    # -- visibility -------------------------------------------------------

    def vis(self, pri: str) -> _Vis:
        v = self.vis_cache.get(pri)
        if v is None:
            v = self.vis_cache[pri] = _Vis(self.graph.products[pri], self.pin)
        return v

    def env(self, pri: str, vis: _Vis) -> ChoiceEnv:
        if vis._env is None:
            vis._env = ChoiceEnv(self.ctx, pri, vis.numbers, vis.labels, self.roots)
        return vis._env

    def _missing(self, pri: str, number: int) -> str:
        """Why ``pri@number`` cannot be chosen."""
        if number in self.graph.products[pri].versions:
            return "is after the pin"
        return "does not exist"

    # -- roots and overrides -----------------------------------------------

    def seed(self) -> None:
        canonical = self.graph.canonical
        for i, (text, ref) in enumerate(zip(self.ctx.roots, self.ctx.root_refs)):
            pri = canonical(ref.pri.text)
            if pri is None:
                self.errors.add(f"root {text}: unknown product")
                continue
            vis = self.vis(pri)
            number: int | None
            if not vis.numbers:
                number, rule = None, "root"
                self.errors.add(f"root {text}: no version visible" + (" at the pin" if self.pin is not None else ""))
            elif ref.number is not None:
                number, rule = ref.number, "root"
                if number not in vis.versions:
                    self.errors.add(f"root {text}: {pri}@{number} {self._missing(pri, number)}")
                    number = None
            elif ref.label is not None:
                rule = f"root-label:{ref.label}"
                number = vis.numbers[-1] if ref.label == "latest" else vis.labels.get(ref.label)
                if number is None:
                    self.errors.add(f"root {text}: no visible version has label {ref.label!r}")
            else:
                number, rule = preferred_version(vis.numbers, vis.labels, self.ctx.prefer)
            if pri not in self.root_index:
                self.root_index[pri] = i
                self.fixed[pri] = (number, rule)
            reqs = self.root_reqs.setdefault(pri, [])
            if number is not None:
                reqs.append(Request(pri, number, None, 0, i))
        for text, ref in zip(self.ctx.overrides, self.ctx.override_refs):
            pri = canonical(ref.pri.text)
            if pri is None:
                self.errors.add(f"override {text}: unknown product")
                continue
            number = ref.number
            assert number is not None  # Context only accepts PRI@N
            if number not in self.vis(pri).versions:
                self.errors.add(f"override {text}: {pri}@{number} {self._missing(pri, number)}; {pri} gets no version")
                number = None
            if pri in self.overrides:
                if self.overrides[pri] != number:
                    self.errors.add(f"override {text}: {pri} is already overridden; ignored")
                continue
            self.overrides[pri] = number
            self.fixed[pri] = (number, "override")
        self.roots = tuple(self.root_index)

    # -- the "could depend on" graph --------------------------------------

    def discover(self) -> tuple[dict[str, dict[str, None]], dict[str, int]]:
        """Everything reachable from the roots through a version that could be
        chosen, with each product's successors and in-degree."""
        products = self.graph.products
        aliases = self.graph.aliases
        fixed = self.fixed
        vis_cache = self.vis_cache
        pin = self.pin
        succ: dict[str, dict[str, None]] = {}
        indeg: dict[str, int] = dict.fromkeys(self.roots, 0)
        todo = list(self.roots)
        while todo:
            v = todo.pop()
            vis = vis_cache.get(v)
            if vis is None:
                vis = vis_cache[v] = _Vis(products[v], pin)
            versions = vis.versions
            f = fixed.get(v)
            chosen: Iterable[VersionInfo]
            if f is None:
                chosen = versions.values()
            else:
                chosen = () if f[0] is None else (versions[f[0]],)
            out: dict[str, None] = {}
            for version in chosen:
                for d in version.dependencies:
                    t = d.pri
                    if t not in products:
                        t = aliases.get(t)
                        if t is None:
                            continue
                    out[t] = None
            succ[v] = out
            for w in out:
                if w in indeg:
                    indeg[w] += 1
                else:
                    indeg[w] = 1
                    todo.append(w)
        return succ, indeg

    @staticmethod
    def components(nodes: Iterable[str], succ: Mapping[str, Mapping[str, None]]) -> list[tuple[list[str], bool]]:
        """Tarjan's SCCs of ``nodes`` (edges leaving them ignored), dependents
        first, each with "is cyclic"."""
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

    # -- deciding ---------------------------------------------------------

    def _call(self, pri: str, vis: _Vis, requests: Sequence[Request]) -> int | None:
        try:
            n = self.strategy.choose(vis.product, requests, self.env(pri, vis))
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not stop resolution
            self.errors.add(f"strategy {self.sname} failed on {pri}: {exc!r}")
            return None
        if n is not None and n not in vis.versions:
            self.errors.add(f"strategy {self.sname} chose {pri}@{n}, which is not visible")
            return None
        return n

    def decide(
        self, pri: str, vis: _Vis, incoming: list[Request] | None
    ) -> tuple[int | None, str, tuple[Request, ...]]:
        """(number, rule, valid requests from dependents, sorted); records nothing."""
        valid: Sequence[Request] = incoming or ()
        if valid:
            versions = vis.versions
            for r in valid:
                if r.number not in versions:
                    valid = [r for r in valid if r.number in versions]
                    break
            valid = tuple(sorted(valid, key=_sort_key)) if len(valid) > 1 else tuple(valid)
        fixed = self.fixed.get(pri)
        if fixed is not None:
            return fixed[0], fixed[1], valid  # type: ignore[return-value]
        pre = self.pre
        n = pre[pri] if pri in pre else self._call(pri, vis, valid)
        if n is not None:
            return n, self.srule, valid  # type: ignore[return-value]
        # nothing visible to choose from is not a disagreement
        return None, ("conflict" if vis.numbers else "newest"), valid  # type: ignore[return-value]

    def record(
        self, pri: str, vis: _Vis, number: int | None, rule: str, valid: tuple[Request, ...],
        incoming: list[Request] | None, cycle: Conflict | None = None,
    ) -> None:
        """Store the choice of an in-graph product, with its conflict and errors."""
        if incoming and len(valid) != len(incoming):
            for r in incoming:
                if r.number not in vis.versions:
                    self.errors.add(f"{r.dependent} depends on {pri}@{r.number}, which {self._missing(pri, r.number)}")
        roots = self.root_reqs.get(pri)
        requests = tuple(roots) + valid if roots else valid
        conflict = cycle
        if conflict is None and (requests or rule == "conflict"):
            if rule == "conflict":
                conflict = self._conflict(pri, requests, number, rule)
            else:
                first = requests[0].number
                for r in requests:
                    if r.number != first:
                        conflict = self._conflict(pri, requests, number, rule)
                        break
        if conflict is not None:
            self.conflicts.append(conflict)
        detail = ""
        if self.ignores and number is not None and rule == self.srule:
            env = self.env(pri, vis)
            if env.preferred() == number:
                detail = env.preferred_rule()
        self.choices[pri] = Choice(pri, number, rule, requests, vis.numbers, True, conflict, detail)

    def _conflict(self, pri: str, requests: tuple[Request, ...], number: int | None, rule: str) -> Conflict:
        who = "override" if rule == "override" else "root" if rule.startswith("root") else self.sname
        asks = [f"{r.dependent or 'the root'} asks for {pri}@{r.number}" for r in requests[:_MESSAGE_REQUESTS]]
        if len(requests) > _MESSAGE_REQUESTS:
            asks.append(f"and {len(requests) - _MESSAGE_REQUESTS} more")
        outcome = f"{who} chose {pri}@{number}" if number is not None else f"{who}: no version"
        return Conflict(pri, requests, number, who, f"{pri}: " + ("; ".join(asks) or "no request") + f" -> {outcome}")

    def emit(
        self, pri: str, vis: _Vis, number: int, hops: int, root: int, within: set[str] | None = None
    ) -> list[str]:
        """Send the requests of the chosen ``pri@number`` to its dependencies.

        Answers the (canonical) products the requests went to.
        """
        sent: list[str] = []
        products = self.graph.products
        aliases = self.graph.aliases
        reqs = self.reqs
        dependent = f"{pri}@{number}"
        hops += 1
        for d in vis.versions[number].dependencies:
            target = d.pri if d.pri in products else aliases.get(d.pri)
            if target is None:
                self.errors.add(f"{dependent} depends on unknown product {d.pri}")
                continue
            if within is not None and target in within:
                continue
            r = Request(target, d.number, dependent, hops, root)
            sent.append(target)
            lst = reqs.get(target)
            if lst is None:
                reqs[target] = [r]
            else:
                lst.append(r)
        return sent

    def nearest(self, pri: str, incoming: list[Request] | None) -> tuple[int, int]:
        """(hops, root) of the product: its nearest request, earliest root on ties."""
        i = self.root_index.get(pri)
        best = None if i is None else (0, i)
        for r in incoming or ():
            key = (r.hops, r.root)
            if best is None or key < best:
                best = key
        assert best is not None
        return best

    def single(self, pri: str) -> None:
        incoming = self.reqs.pop(pri, None)
        if incoming is None and pri not in self.root_index:
            return  # not reached through chosen versions: outside the graph
        vis = self.vis_cache[pri]
        number, rule, valid = self.decide(pri, vis, incoming)
        self.record(pri, vis, number, rule, valid, incoming)
        if number is not None and vis.versions[number].dependencies:
            hops, root = self.nearest(pri, incoming)
            self.emit(pri, vis, number, hops, root)

    # -- cycles -----------------------------------------------------------

    def cyclic(self, members: list[str]) -> None:
        """Decide a component with cycles: synchronous rounds to a fixed point.

        A round reaches and decides every member from the previous round's
        choices only, so the sequence of rounds depends on nothing but the
        data. When it repeats without settling, the members whose version
        changes along the repetition are frozen (no version, a conflict) and
        the rounds start again; each restart freezes at least one more member,
        so this ends.
        """
        scc = set(members)
        order = sorted(members)
        external = {m: self.reqs.pop(m, None) for m in order}
        frozen: dict[str, list[int | None]] = {}
        cap = max(64, 4 * len(order))
        while True:
            state: _State = {}
            dist: dict[str, tuple[int, int]] = {}
            # hashes only, so a long run on a big component stays small; a
            # repetition is confirmed by replaying it before anything is frozen
            seen: dict[int, int] = {hash(_signature(state)): 0}
            step = 0
            while True:
                new, new_dist = self._round(order, scc, external, state, dist, frozen)
                step += 1
                settled = _signature(new) == _signature(state)
                previous, state, dist = state, new, new_dist
                if settled:
                    break
                key = hash(_signature(state))
                if key in seen:
                    changing = self._orbit(order, scc, external, state, dist, frozen, step - seen[key])
                    if changing:
                        break
                elif step > cap:
                    changing = _changed(previous, state, frozen) or {
                        m: [] for m in order if m not in frozen
                    }
                    break
                seen[key] = step
            if settled:
                break
            for pri, numbers in changing.items():
                frozen[pri] = numbers
        for m in order:
            got = state.get(m)
            if got is None:
                if m in frozen:  # left the graph once frozen: still say why
                    self.conflicts.append(self._cycle_conflict(m, frozen[m], ()))
                continue
            number, rule, valid, incoming = got
            cycle = None
            if m in frozen:
                roots = self.root_reqs.get(m) or []
                cycle = self._cycle_conflict(m, frozen[m], tuple(roots) + valid)
            vis = self.vis_cache[m]
            self.record(m, vis, number, rule, valid, incoming, cycle)
            if number is not None:
                self.emit(m, vis, number, dist[m][0], dist[m][1], within=scc)

    def _round(
        self, order: list[str], scc: set[str], external: Mapping[str, list[Request] | None],
        state: _State, dist: Mapping[str, tuple[int, int]], frozen: Mapping[str, object],
    ) -> tuple[_State, dict[str, tuple[int, int]]]:
        """One synchronous round: reach and decide every member from ``state``."""
        # nearest distances through the previous round's choices (Dijkstra on
        # (hops, root): every edge adds one hop and keeps the root)
        heap: list[tuple[int, int, str]] = []
        for m in order:
            if external[m] is not None or m in self.root_reqs:
                h, r = self.nearest(m, external[m])
                heap.append((h, r, m))
        heapq.heapify(heap)
        new_dist: dict[str, tuple[int, int]] = {}
        internal: dict[str, list[Request]] = {}
        while heap:
            h, r, m = heapq.heappop(heap)
            if m in new_dist:
                continue
            new_dist[m] = (h, r)
            prev = state.get(m)
            if prev is None or prev[0] is None:
                continue
            for d in self.vis_cache[m].versions[prev[0]].dependencies:
                t = self.graph.canonical(d.pri)
                if t is not None and t in scc:
                    internal.setdefault(t, []).append(Request(t, d.number, f"{m}@{prev[0]}", h + 1, r))
                    if t not in new_dist:
                        heapq.heappush(heap, (h + 1, r, t))
        new: _State = {}
        for m in order:
            if m not in new_dist:
                continue
            incoming = (external[m] or []) + internal.get(m, [])
            vis = self.vis_cache[m]
            if m in frozen:
                valid = tuple(sorted((q for q in incoming if q.number in vis.versions), key=_sort_key))
                new[m] = (None, "conflict", valid, incoming or None)
            else:
                number, rule, valid = self.decide(m, vis, list(incoming) or None)
                new[m] = (number, rule, valid, incoming or None)
        return new, new_dist

    def _orbit(
        self, order: list[str], scc: set[str], external: Mapping[str, list[Request] | None],
        state: _State, dist: Mapping[str, tuple[int, int]], frozen: Mapping[str, object], period: int,
    ) -> dict[str, list[int | None]]:
        """Members whose version changes along a repetition of ``period`` rounds.

        Empty when replaying does not come back to ``state`` (a hash collision):
        then nothing repeats yet. Along a true repetition some member always
        changes its version: were every version fixed, the reached members
        would be too.
        """
        start = _signature(state)
        values: dict[str, list[int | None]] = {}
        for _ in range(period):
            for m, got in state.items():
                seen = values.setdefault(m, [])
                if got[0] not in seen:
                    seen.append(got[0])
            state, dist = self._round(order, scc, external, state, dist, frozen)
        if _signature(state) != start:
            return {}
        return {m: v for m, v in values.items() if len(v) > 1}

    def _cycle_conflict(self, pri: str, numbers: list[int | None], requests: tuple[Request, ...]) -> Conflict:
        shown = ", ".join("none" if n is None else f"@{n}" for n in numbers) or "a changing version"
        return Conflict(
            pri, requests, None, self.sname,
            f"{pri}: choices do not settle around a cycle of dependencies ({self.sname} picks {shown} "
            f"in turn) -> no version",
        )

    # -- driver -----------------------------------------------------------

    def run(self) -> Resolution:
        self.seed()
        if self.ignores:
            self.walk()
        else:
            self.ordered()
        self.conflicts.sort(key=lambda c: c.pri)
        return Resolution(self.graph, self.ctx, self.choices, self.conflicts, sorted(self.errors), self.overrides)

    def walk(self) -> None:
        """Resolve when choices do not depend on requests: a breadth-first walk.

        Every version is known as soon as its product is reached, so the
        graph is what the walk reaches, and no cycle can feed back. The
        queue starts with the roots in the context's order, so products are
        taken in (hops, root) order and each has its nearest root when taken.
        """
        reqs = self.reqs
        root_index = self.root_index
        vis_cache = self.vis_cache
        queue = list(self.roots)
        place = {pri: (0, root_index[pri]) for pri in queue}
        for pri in queue:  # grows while iterated: a FIFO without popping
            hops, root = place[pri]
            vis = vis_cache.get(pri) or self.vis(pri)
            fixed = self.fixed.get(pri)
            if fixed is not None:
                number = fixed[0]
            else:
                number = self.pre[pri] = self._call(pri, vis, ())
            if number is None:
                continue
            if vis.versions[number].dependencies:
                for target in self.emit(pri, vis, number, hops, root):
                    if target not in place:
                        place[target] = (hops + 1, root)
                        queue.append(target)
        for pri in queue:
            incoming = reqs.pop(pri, None)
            vis = vis_cache[pri]
            number, rule, valid = self.decide(pri, vis, incoming)
            self.record(pri, vis, number, rule, valid, incoming)

    def ordered(self) -> None:
        """Resolve when choices depend on requests: dependents first."""
        succ, indeg = self.discover()
        # Kahn's order: a product is decided once every product that could
        # depend on it is; most graphs are acyclic and end here
        ready = [v for v, d in indeg.items() if d == 0]
        single = self.single
        while ready:
            v = ready.pop()
            single(v)
            for w in succ[v]:
                d = indeg[w] - 1
                indeg[w] = d
                if d == 0:
                    ready.append(w)
        left = [v for v, d in indeg.items() if d > 0]
        if left:  # cycles, and what only they lead to
            for members, is_cyclic in self.components(left, succ):
                if is_cyclic:
                    self.cyclic(members)
                else:
                    single(members[0])


def resolve(graph: Graph, context: Context) -> Resolution:
    """Resolve every product of the context's graph; never raises for bad data."""
    # resolution allocates many small objects and creates no reference
    # cycles; left on, the collector would rescan the whole (large, long
    # lived) graph many times over (measured: about a third of the run)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Resolver(graph, context).run()
    finally:
        if was_enabled:
            gc.enable()


def diff(
    a: Resolution, b: Resolution, pris: Iterable[str] | None = None
) -> list[tuple[str, int | None, int | None]]:
    """``(pri, old, new)`` for each product whose version differs from ``a`` to ``b``.

    ``pris`` defaults to the products of either graph.
    """
    names = sorted(set(pris) if pris is not None else set(a.choices) | set(b.choices))
    out: list[tuple[str, int | None, int | None]] = []
    for pri in names:
        ca, cb = a.choose(pri), b.choose(pri)
        old = None if ca is None else ca.number
        new = None if cb is None else cb.number
        if old != new:
            out.append((pri, old, new))
    return out
