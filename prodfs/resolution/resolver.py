"""The resolver: which version each versionless product name means in a context.

Pure logic over a `Graph`; no I/O. See docs/strategies.md for the rules.

The roots, and the dependencies of the chosen versions followed from the
roots (and only through chosen versions), form the workspace's graph. Inside
it every product gets one version: an override if there is one, else the
root's version for a root, else what the strategy picks from the requests of
the chosen versions that depend on it. Choosing a version changes whose
dependencies count, so this is a fixed point; how it is computed, and why it
always ends, is in `prodfs.resolution._resolve` and `prodfs.resolution._cycles`.

Products outside the graph resolve on demand, by label preference then the
newest version, as of the pin.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from typing import Any

from ._records import Choice, Conflict, Request
from ._resolve import Resolver, Vis
from .context import Context
from .graph import Graph
from .strategies import preferred_version

__all__ = ["Request", "Conflict", "Choice", "Resolution", "resolve", "resolve_since", "diff"]


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
        places: Mapping[str, tuple[int, int]] | None = None,
        senders: Mapping[str, set[str]] | None = None,
    ) -> None:
        self.graph = graph
        self.context = context
        self.choices = choices
        self.conflicts = conflicts
        self.errors = errors
        self._overrides = overrides
        self._memo: dict[str, Choice | None] = {}
        self.places = places or {}  # see `Resolver.places`
        self.senders = senders or {}  # see `Resolver.senders`
        self.decided: int | None = None  # products the run that made it decided (None: all of its graph)
        self.part: set[str] | None = None  # those products, when it decided only part of the graph

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
        vis = Vis(self.graph.products[canonical], self.context.pin_us)
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

    @property
    def asked(self) -> Iterable[str]:
        """The products outside the graph this resolution has answered for so far."""
        return self._memo.keys()

    def forget(self, pris: Iterable[str]) -> None:
        """Make the on-demand answers for ``pris`` again when next asked.

        For changes outside the workspace's graph, which cannot move it: the
        graph's choices stay as they are.
        """
        for pri in pris:
            self._memo.pop(pri, None)

    def explain(self, pri: str) -> str:
        """A human account of one product's choice (for ``prodfs why``)."""
        lines = [f"context: {self.context.describe()}"]
        c = self.choose(pri)
        if c is None:
            at_pin = " at the pin" if self.context.pin_us is not None else ""
            lines.append(f"{pri}: unknown, or no version visible{at_pin}")
            return "\n".join(lines)
        lines.append(f"product: {c.pri}" + ("" if c.pri == pri else f" (named {pri})"))
        lines.append("in the workspace graph: " + ("yes" if c.in_graph else "no (resolved by preference)"))
        lines.append("candidates: " + (", ".join(map(str, c.candidates)) or "(none)"))
        roots = self.context.roots
        for r in c.requests:
            who = "root" if r.dependent is None else r.dependent
            via = roots[r.root] if r.root < len(roots) else f"#{r.root}"
            lines.append(f"  {who} asks for @{r.number} ({r.hops} hops from root {via})")
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


def resolve(graph: Graph, context: Context) -> Resolution:
    """Resolve every product of the context's graph; never raises for bad data."""
    # Resolution allocates many small objects and creates no reference
    # cycles; left on, the collector would rescan the whole (large, long
    # lived) graph many times over (measured: about a third of the run).
    # The young collection of what was built (about 0.2 s per 100k products
    # here) then happens at the caller's next allocations, as it would have
    # piecemeal with the collector on.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        r = Resolver(graph, context).run()
        return Resolution(graph, context, r.choices, r.conflicts, sorted(r.errors), r.overrides, r.places, r.senders)
    finally:
        if was_enabled:
            gc.enable()


def resolve_since(old: Resolution, graph: Graph, touched: Iterable[str]) -> Resolution:
    """``resolve(graph, old.context)``, for a graph that changed from ``old``'s only in
    the versions and labels of ``touched`` (no rename): decides again only what
    those changes can move (`Resolver.run_since`) and keeps the rest of ``old``."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        r = Resolver(graph, old.context)
        part = r.run_since(old.choices, old.places, old.senders, touched)
        # copied whole and then the part taken out: a copy is one C call, a filter a Python step per entry
        choices, places, senders = dict(old.choices), dict(old.places), dict(old.senders)
        for p in part:
            choices.pop(p, None)
            places.pop(p, None)
            senders.pop(p, None)
        choices.update(r.choices)
        places.update((p, v) for p, v in r.places.items() if p in part)
        senders.update(r.senders)  # only products of the part got requests in this run
        conflicts = sorted([c for c in old.conflicts if c.pri not in part] + r.conflicts, key=lambda c: c.pri)
        # an error names the products it is about: those of the part are made again
        errors = set(r.errors) | {e for e in old.errors if not any(p in e for p in part)}
        out = Resolution(graph, old.context, choices, conflicts, sorted(errors), r.overrides, places, senders)
        out.decided, out.part = len(part), part
        return out
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
