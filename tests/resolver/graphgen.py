"""Seeded generator of layered product graphs with diamonds.

Used by the resolver tests and by bench/bench_resolver.py (which loads this
file by path), so there is one copy. Plain `random.Random`: the same seed
always gives the same graph.

Products sit in layers; a product depends on a few products of deeper layers
(a fixed set per product, as in a pipeline where a shot always uses the same
assets), each of its versions asking for some version of each of them that
already existed when it was published. Different dependents asking for
different versions of a shared product make the diamonds. Deeper layers are
published earlier, so most dependencies can be satisfied.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from prodfs.resolution.graph import Dep, Graph, ProductInfo, VersionInfo

__all__ = ["GenSpec", "layered_graph", "product_name"]

LABELS = ("approved", "published")


@dataclass(frozen=True)
class GenSpec:
    products: int
    seed: int = 0
    layers: int = 8
    max_versions: int = 4
    max_deps: int = 4
    span_us: int = 1_000_000_000  # time span of all publishes
    label_rate: float = 0.3


def product_name(layer: int, i: int) -> str:
    return f"bench:l{layer}-p:n{i}"


def layered_graph(spec: GenSpec) -> tuple[Graph, list[str]]:
    """A graph and its roots (every product of the top layer, versionless)."""
    rnd = random.Random(spec.seed)
    layers = max(2, spec.layers)
    per = [spec.products // layers + (1 if k < spec.products % layers else 0) for k in range(layers)]
    names = [[product_name(k, i) for i in range(per[k])] for k in range(layers)]
    # deepest layer first, so that a product's dependencies exist when it is made
    products: dict[str, ProductInfo] = {}
    pid = 0
    for k in reversed(range(layers)):
        lo = spec.span_us * (layers - 1 - k) // layers
        deeper = [n for kk in range(k + 1, layers) for n in (names[kk] if kk <= k + 2 else ())]
        for name in names[k]:
            pid += 1
            count = rnd.randint(1, spec.max_versions)
            times = sorted(rnd.randint(lo, spec.span_us) for _ in range(count))
            targets = rnd.sample(deeper, min(len(deeper), rnd.randint(0, spec.max_deps))) if deeper else []
            versions: dict[int, VersionInfo] = {}
            for n, t in enumerate(times, start=1):
                deps = []
                for target in targets:
                    tv = [v.number for v in products[target].versions.values() if v.created_us <= t]
                    if tv:
                        deps.append(Dep(target, rnd.choice(tv)))
                versions[n] = VersionInfo(n, t + n, tuple(deps))  # + n: strictly increasing times
            labels = {lab: rnd.randint(1, count) for lab in LABELS if rnd.random() < spec.label_rate}
            products[name] = ProductInfo(name, pid, versions[1].created_us, versions, labels)
    return Graph(products), list(names[0])
