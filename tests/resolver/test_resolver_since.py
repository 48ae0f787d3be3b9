"""Resolving again after a change decides only what the change can move, and gives
exactly what resolving the whole graph gives (generated graphs, cycles included)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prodfs.resolution.graph import Dep, VersionInfo
from prodfs.resolution.resolver import Resolution, resolve, resolve_since
from tests.resolver.rgraphs import STRATEGIES, Case, cases, pri

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(a: Resolution, b: Resolution) -> None:
    assert a.choices == b.choices
    assert a.conflicts == b.conflicts
    assert a.errors == b.errors


@st.composite
def changes(draw: st.DrawFn) -> tuple[Case, list[tuple[str, str, object]]]:
    """A case and a few changes the feed could bring: new versions (with any
    dependencies, also on versions that do not exist), labels set or removed."""
    case = draw(cases(max_products=8))
    names = sorted(case.graph.products)
    out: list[tuple[str, str, object]] = []
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(names))
        if draw(st.booleans()):
            deps = [f"{draw(st.sampled_from(names))}@{draw(st.integers(1, 5))}"
                    for _ in range(draw(st.integers(0, 3)))]
            out.append((target, "version", deps))
        else:
            out.append((target, "label", (draw(st.sampled_from(["approved", "published"])),
                                          draw(st.none() | st.integers(1, 5)))))
    return case, out


def _apply(case: Case, change: tuple[str, str, object], clock: list[int]) -> None:
    target, kind, what = change
    product = case.graph.products[target]
    if kind == "version":
        clock[0] += 7
        number = max(product.versions, default=0) + 1
        product.versions[number] = VersionInfo(number, clock[0], tuple(Dep.parse(d) for d in what))  # type: ignore[union-attr]
    else:
        label, number = what  # type: ignore[misc]
        if number is None or number not in product.versions:
            product.labels.pop(label, None)
        else:
            product.labels[label] = number


@SETTINGS
@given(changes(), st.sampled_from(STRATEGIES))
def test_resolving_since_a_change_is_resolving_all_of_it(drawn, strategy: str) -> None:  # noqa: ANN001
    case, todo = drawn
    context = case.context.replace(strategy=strategy)
    old = resolve(case.graph, context)
    clock = [max((v.created_us for p in case.graph for v in p.versions.values()), default=0)]
    for change in todo:
        _apply(case, change, clock)
        since = resolve_since(old, case.graph, {change[0]})
        full = resolve(case.graph, context)
        _same(since, full)
        old = since  # the next change starts from what was made since


def test_a_change_far_from_the_roots_decides_little() -> None:
    """A chain of 50 products from the root: a new version of the last one decides only it."""
    from tests.resolver.rgraphs import build

    spec = {pri(i): {1: (i, [f"{pri(i + 1)}@1"] if i < 49 else [])} for i in range(50)}
    graph = build(spec)
    from prodfs.resolution.context import Context

    context = Context(roots=(pri(0),), strategy="highest")
    old = resolve(graph, context)
    graph.products[pri(49)].versions[2] = VersionInfo(2, 100, ())
    from prodfs.resolution._resolve import Resolver

    r = Resolver(graph, context)
    part = r.run_since(old.choices, old.places, old.senders, {pri(49)})
    assert part == {pri(49)}
    _same(resolve_since(old, graph, {pri(49)}), resolve(graph, context))
    # at the root, the whole chain
    graph.products[pri(0)].versions[2] = VersionInfo(2, 101, (Dep(pri(1), 1),))
    assert len(Resolver(graph, context).run_since(old.choices, old.places, old.senders, {pri(0)})) == 50
