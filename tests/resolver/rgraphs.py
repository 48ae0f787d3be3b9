"""Small graphs for the resolver tests: a compact builder, a hypothesis
strategy for arbitrary (also cyclic, also inconsistent) graphs and contexts,
and an oracle that recomputes from the graph what a resolution must satisfy,
without using the resolver's own bookkeeping.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from prodfs.resolution.context import Context
from prodfs.resolution.graph import Dep, Graph, ProductInfo, VersionInfo
from prodfs.resolution.resolver import Resolution

# name -> {number: (created_us, ["PRI@N", ...])}
Spec = Mapping[str, Mapping[int, tuple[int, Sequence[str]]]]


def pri(i: int) -> str:
    return f"t:p{i}-x"


def build(
    spec: Spec,
    labels: Mapping[str, Mapping[str, int]] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    *,
    as_of_us: int | None = None,
) -> Graph:
    products = {}
    for i, (name, versions) in enumerate(spec.items()):
        vs = {n: VersionInfo(n, t, tuple(Dep.parse(d) for d in deps)) for n, (t, deps) in versions.items()}
        products[name] = ProductInfo(
            name, i + 1, min((v.created_us for v in vs.values()), default=0), vs,
            dict((labels or {}).get(name, {})), tuple((aliases or {}).get(name, ())),
        )
    return Graph(products, as_of_us=as_of_us)


def shuffled(graph: Graph, seed: int) -> Graph:
    """The same graph with products, versions and dependency lists in another order."""
    rnd = random.Random(seed)
    items = list(graph.products.values())
    rnd.shuffle(items)
    out = []
    for p in items:
        vs = list(p.versions.values())
        rnd.shuffle(vs)
        versions = {}
        for v in vs:
            deps = list(v.dependencies)
            rnd.shuffle(deps)
            versions[v.number] = VersionInfo(v.number, v.created_us, tuple(deps))
        labels = list(p.labels.items())
        rnd.shuffle(labels)
        out.append(ProductInfo(p.pri, p.product_id, p.created_us, versions, dict(labels), p.aliases))
    return Graph({p.pri: p for p in out}, as_of_us=graph.as_of_us)


@dataclass
class Case:
    graph: Graph
    context: Context


STRATEGIES = ("latest", "highest", "lowest", "nearest", "strict")


@st.composite
def cases(
    draw: st.DrawFn, *, acyclic: bool = False, strategies: Sequence[str] = STRATEGIES, max_products: int = 7
) -> Case:
    """A graph of up to ``max_products`` and a context over it.

    Dependencies may point anywhere (cycles) unless ``acyclic``, and now and
    then at versions that do not exist. Times grow with version numbers.
    """
    n = draw(st.integers(1, max_products))
    spec: dict[str, dict[int, tuple[int, list[str]]]] = {}
    counts = [draw(st.integers(1, 4)) for _ in range(n)]
    labels: dict[str, dict[str, int]] = {}
    for i in range(n):
        t = draw(st.integers(0, 20))
        versions: dict[int, tuple[int, list[str]]] = {}
        for number in range(1, counts[i] + 1):
            t += draw(st.integers(1, 20))
            targets = range(i + 1, n) if acyclic else range(n)
            deps: list[str] = []
            if len(targets):
                for j in draw(st.lists(st.sampled_from(list(targets)), max_size=3)):
                    # mostly an existing version, sometimes one that is not there
                    k = draw(st.integers(1, counts[j] + (1 if draw(st.integers(0, 9)) == 0 else 0)))
                    deps.append(f"{pri(j)}@{k}")
            versions[number] = (t, deps)
        spec[pri(i)] = versions
        labels[pri(i)] = draw(st.dictionaries(st.sampled_from(["approved", "published"]),
                                              st.integers(1, counts[i]), max_size=2))
    graph = build(spec, labels)
    root_ids = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))
    roots = []
    for j in root_ids:
        form = draw(st.integers(0, 3))
        if form == 1:
            roots.append(f"{pri(j)}@{draw(st.integers(1, counts[j] + 1))}")
        elif form == 2:
            roots.append(f"{pri(j)}@{draw(st.sampled_from(['approved', 'published', 'latest']))}")
        else:
            roots.append(pri(j))
    overrides = [f"{pri(j)}@{draw(st.integers(1, counts[j]))}"
                 for j in draw(st.lists(st.integers(0, n - 1), max_size=2, unique=True))]
    pin = draw(st.none() | st.integers(0, 120))
    prefer = draw(st.lists(st.sampled_from(["approved", "published"]), max_size=2, unique=True))
    strategy = draw(st.sampled_from(list(strategies)))  # tests may run the case under others too
    context = Context(roots=tuple(roots), strategy=strategy, pin_us=pin, prefer=tuple(prefer),
                      overrides=tuple(overrides))
    return Case(graph, context)


# -- the oracle ---------------------------------------------------------------


def visible(graph: Graph, name: str, pin: int | None) -> dict[int, VersionInfo]:
    return {n: v for n, v in graph.products[name].versions.items() if pin is None or v.created_us <= pin}


def number_of(res: Resolution, name: str) -> int | None:
    c = res.choices.get(name)
    return None if c is None else c.number


def reach(graph: Graph, res: Resolution) -> dict[str, tuple[int, int]]:
    """Breadth-first from the roots through the chosen versions: (hops, root) of each product."""
    start: dict[str, int] = {}
    for i, text in enumerate(res.context.roots):
        c = graph.canonical(text.split("@", 1)[0])
        if c is not None:
            start.setdefault(c, i)
    best: dict[str, tuple[int, int]] = {p: (0, i) for p, i in start.items()}
    queue = deque(sorted(start, key=lambda p: start[p]))
    while queue:
        p = queue.popleft()
        n = number_of(res, p)
        if n is None:
            continue
        for d in graph.products[p].versions[n].dependencies:
            t = graph.canonical(d.pri)
            if t is not None and t not in best:
                best[t] = (best[p][0] + 1, best[p][1])
                queue.append(t)
    return best


def asked(graph: Graph, res: Resolution) -> dict[str, list[tuple[str, int]]]:
    """product -> [(dependent "PRI@N", number asked)] from the chosen versions of the graph."""
    out: dict[str, list[tuple[str, int]]] = {}
    for p, c in res.choices.items():
        if c.number is None:
            continue
        for d in graph.products[p].versions[c.number].dependencies:
            t = graph.canonical(d.pri)
            if t is not None:
                out.setdefault(t, []).append((f"{p}@{c.number}", d.number))
    return out


def root_numbers(graph: Graph, ctx: Context, name: str) -> list[int]:
    """Versions the context's roots ask of a product (resolved the documented way)."""
    pin = ctx.pin_us
    vis = visible(graph, name, pin)
    out = []
    for ref in ctx.root_refs:
        if graph.canonical(ref.pri.text) != name or not vis:
            continue
        if ref.number is not None:
            n = ref.number if ref.number in vis else None
        elif ref.label == "latest":
            n = max(vis)
        elif ref.label is not None:
            n = graph.products[name].labels.get(ref.label)
            n = n if n in vis else None
        else:
            n = preferred(graph, ctx, name)
        if n is not None:
            out.append(n)
    return out


def preferred(graph: Graph, ctx: Context, name: str) -> int | None:
    vis = visible(graph, name, ctx.pin_us)
    if not vis:
        return None
    for label in ctx.prefer:
        n = graph.products[name].labels.get(label)
        if n in vis:
            return n
    return max(vis)


def names(items: Iterable[str]) -> list[str]:
    return sorted(set(items))
