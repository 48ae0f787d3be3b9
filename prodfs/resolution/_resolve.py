"""The resolver's engine; the public face and the rules are in `prodfs.resolution.resolver`.

Products are decided in topological order of the "could depend on" graph
(the dependencies of every version that could still be chosen), so every
product is decided once, after all of its possible dependents. Components
with cycles are handed to `prodfs.resolution._cycles`. When the strategy ignores the
requests, the graph is simply what the chosen versions reach: one walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ._cycles import Component, components
from ._records import Choice, Conflict, Request, sort_key
from .context import Context
from .graph import Graph, ProductInfo, VersionInfo
from .strategies import ChoiceEnv, Strategy, UnknownStrategy, get_strategy, preferred_version

__all__ = ["Vis", "Resolver"]

# how many requests a conflict message spells out before summarising the rest
_MESSAGE_REQUESTS = 8


class Vis:
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



class Resolver:
    """One resolution of a graph in a context; `run` once."""

    def __init__(self, graph: Graph, context: Context) -> None:
        self.graph = graph
        self.ctx = context
        self.pin = context.pin_us
        self.errors: set[str] = set()
        self.vis_cache: dict[str, Vis] = {}
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
        # requests of the decided dependents, by the product they ask for
        self.reqs: dict[str, list[Request]] = {}
        self.pre: dict[str, int | None] = {}  # choices known before requests
        self.choices: dict[str, Choice] = {}
        self.conflicts: list[Conflict] = []
        # (hops, root) each chosen version sent its requests with: where a later
        # run that decides only part of the graph starts from (run_since)
        self.places: dict[str, tuple[int, int]] = {}
        self.senders: dict[str, set[str]] = {}  # product -> the products whose chosen versions asked for it

    # -- visibility -------------------------------------------------------

    def vis(self, pri: str) -> Vis:
        v = self.vis_cache.get(pri)
        if v is None:
            v = self.vis_cache[pri] = Vis(self.graph.products[pri], self.pin)
        return v

    def env(self, pri: str, vis: Vis) -> ChoiceEnv:
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

    def discover(self, start: Iterable[str] | None = None, *, every_version: bool = False
                 ) -> tuple[dict[str, dict[str, None]], dict[str, int]]:
        """Everything reachable from the roots (or from ``start``) through a
        version that could be chosen, with each product's successors and
        in-degree within it. With ``every_version`` every version of the
        start products counts, also for a root or override: the version it
        had before a change leads to what the change may take out of the graph."""
        products = self.graph.products
        aliases = self.graph.aliases
        fixed = self.fixed
        vis_cache = self.vis_cache
        pin = self.pin
        succ: dict[str, dict[str, None]] = {}
        indeg: dict[str, int] = dict.fromkeys(self.roots if start is None else start, 0)
        todo = list(indeg)
        opened = set(indeg) if every_version else set()
        while todo:
            v = todo.pop()
            vis = vis_cache.get(v)
            if vis is None:
                vis = vis_cache[v] = Vis(products[v], pin)
            versions = vis.versions
            f = fixed.get(v) if v not in opened else None
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


    # -- deciding ---------------------------------------------------------

    def _call(self, pri: str, vis: Vis, requests: Sequence[Request]) -> int | None:
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
        self, pri: str, vis: Vis, incoming: list[Request] | None
    ) -> tuple[int | None, str, tuple[Request, ...]]:
        """(number, rule, valid requests from dependents, sorted); records nothing."""
        valid: Sequence[Request] = incoming or ()
        if valid:
            versions = vis.versions
            for r in valid:
                if r.number not in versions:
                    valid = [r for r in valid if r.number in versions]
                    break
            valid = tuple(sorted(valid, key=sort_key)) if len(valid) > 1 else tuple(valid)
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
        self, pri: str, vis: Vis, number: int | None, rule: str, valid: tuple[Request, ...],
        incoming: list[Request] | None, cycle: Conflict | None = None,
    ) -> None:
        """Store the choice of an in-graph product, with its conflict and errors."""
        if incoming and len(valid) != len(incoming):
            for r in incoming:
                if r.number not in vis.versions:
                    why = self._missing(pri, r.number)
                    self.errors.add(f"{r.dependent} depends on {pri}@{r.number}, which {why}")
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
        self, pri: str, vis: Vis, number: int, hops: int, root: int, within: set[str] | None = None,
        into: set[str] | None = None,
    ) -> list[str]:
        """Send the requests of the chosen ``pri@number`` to its dependencies
        (but not to those ``within``; only to those ``into``, when given).

        Answers the (canonical) products the requests went to.
        """
        sent: list[str] = []
        products = self.graph.products
        aliases = self.graph.aliases
        reqs = self.reqs
        dependent = f"{pri}@{number}"
        self.places[pri] = (hops, root)
        hops += 1
        for d in vis.versions[number].dependencies:
            target = d.pri if d.pri in products else aliases.get(d.pri)
            if into is not None and target not in into:
                continue
            if target is None:
                self.errors.add(f"{dependent} depends on unknown product {d.pri}")
                continue
            if within is not None and target in within:
                continue
            r = Request(target, d.number, dependent, hops, root)
            sent.append(target)
            got = self.senders.get(target)
            if got is None:
                self.senders[target] = {pri}
            else:
                got.add(pri)
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


    # -- driver -----------------------------------------------------------

    def run(self) -> Resolver:
        """Resolve; the outcome is in ``choices``, ``conflicts`` (sorted by
        product) and ``errors``."""
        self.seed()
        if self.ignores:
            self.walk()
        else:
            self.ordered()
        self.conflicts.sort(key=lambda c: c.pri)
        return self

    def run_since(self, old_choices: Mapping[str, Choice], old_places: Mapping[str, tuple[int, int]],
                  old_senders: Mapping[str, set[str]], touched: Iterable[str]) -> set[str]:
        """Decide again only what a change to ``touched`` can move; return that part.

        A product's choice follows from its own versions and the requests of
        the chosen versions that depend on it, so a change reaches only the
        products the touched ones could depend on, transitively (the part).
        Everything outside keeps its choice; the requests it sends into the
        part (``old_senders`` say who sent them) are sent again from its
        choices and ``old_places`` (where it sent them from). The part is then decided dependents first,
        as `ordered` does the whole graph, which for a strategy that ignores
        requests gives what `walk` does.
        """
        self.seed()
        part = set(self.discover([t for t in touched if t in self.graph.products], every_version=True)[1])
        # the part's own edges (a root through its chosen version only), so that its
        # cycles are the graph's: the part holds everything its members reach
        found = self.discover(sorted(part))
        # what the rest of the graph sent into the part, sent again
        outside = {q for t in part for q in old_senders.get(t, ()) if q not in part}
        for pri in sorted(outside):
            choice = old_choices.get(pri)
            place = old_places.get(pri)
            if choice is None or choice.number is None or place is None or pri not in self.graph.products:
                continue
            vis = self.vis(pri)
            if choice.number in vis.versions:
                self.emit(pri, vis, choice.number, place[0], place[1], into=part)
        self.ordered(found)
        self.conflicts.sort(key=lambda c: c.pri)
        return part

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

    def ordered(self, found: tuple[dict[str, dict[str, None]], dict[str, int]] | None = None) -> None:
        """Resolve when choices depend on requests: dependents first.

        ``found``: the part of the "could depend on" graph to decide (the
        successors and in-degrees `discover` answers); default all of it.
        """
        succ, indeg = found or self.discover()
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
            for members, is_cyclic in components(left, succ):
                if is_cyclic:
                    Component(self, members).settle()
                else:
                    single(members[0])


