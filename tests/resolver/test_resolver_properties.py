"""Properties of resolution on generated graphs, checked against an oracle
that recomputes reachability, requests and distances from the graph itself."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from prodfs.resolution import strategies
from prodfs.resolution.resolver import resolve
from tests.resolver.rgraphs import STRATEGIES, Case, asked, cases, preferred, reach, root_numbers, shuffled, visible

# generating a case costs far more than resolving it, so each case is
# resolved under every strategy it applies to
SETTINGS = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _under(case: Case, names: Iterable[str] = STRATEGIES) -> Iterator[Case]:
    for name in names:
        yield Case(case.graph, case.context.replace(strategy=name))


class _GeneralLatest(strategies.Latest):
    """`latest` without the hint, so the resolver takes its general path."""

    name = "test_general_latest"
    ignores_requests = False


@pytest.fixture(scope="module", autouse=True)
def _general_latest() -> Iterator[None]:
    strategies.register(_GeneralLatest)
    yield
    strategies._registry.pop(_GeneralLatest.name, None)


def _valid_asks(case: Case, res, name: str) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    vis = visible(case.graph, name, case.context.pin_us)
    return [(dep, n) for dep, n in asked(case.graph, res).get(name, []) if n in vis]


def _fixed(case: Case, name: str) -> bool:
    ctx, g = case.context, case.graph
    return any(g.canonical(r.pri.text) == name for r in ctx.root_refs + ctx.override_refs)


@SETTINGS
@given(cases())
def test_record_order_does_not_matter(drawn: Case) -> None:
    for case in _under(drawn):
        expected = resolve(case.graph, case.context).to_json()
        for seed in (1, 2):
            assert resolve(shuffled(case.graph, seed), case.context).to_json() == expected


@SETTINGS
@given(cases())
def test_graph_and_requests_are_what_the_chosen_versions_say(drawn: Case) -> None:
    for case in _under(drawn):
        g, ctx = case.graph, case.context
        res = resolve(g, ctx)
        places = reach(g, res)
        assert set(res.choices) == set(places)
        for name, c in res.choices.items():
            assert c.in_graph and c.pri == name
            expected = sorted(
                (dep, n, places[dep.rsplit("@", 1)[0]][0] + 1, places[dep.rsplit("@", 1)[0]][1])
                for dep, n in _valid_asks(case, res, name)
            )
            got = sorted((r.dependent, r.number, r.hops, r.root) for r in c.requests if r.dependent is not None)
            assert got == expected
            assert [r.number for r in c.requests if r.dependent is None] == root_numbers(g, ctx, name)


@SETTINGS
@given(cases())
def test_a_pin_hides_everything_after_it(drawn: Case) -> None:
    for case in _under(drawn):
        g, pin = case.graph, case.context.pin_us
        res = resolve(g, case.context)
        for name, product in g.products.items():
            c = res.choose(name)
            vis = visible(g, name, pin)
            if c is None:
                assert not vis
                continue
            assert c.candidates == tuple(sorted(vis))
            if c.number is not None:
                assert c.number in vis
                if pin is not None:
                    assert product.versions[c.number].created_us <= pin
            for r in c.requests:
                assert r.number in vis


@SETTINGS
@given(cases())
def test_overrides_always_win_and_explicit_roots_are_chosen(drawn: Case) -> None:
    for case in _under(drawn):
        g, ctx = case.graph, case.context
        res = resolve(g, ctx)
        overridden = set()
        for ref in ctx.override_refs:
            name = g.canonical(ref.pri.text)
            if name is None or name in overridden:
                continue
            overridden.add(name)
            c = res.choose(name)
            if ref.number in visible(g, name, ctx.pin_us):
                assert c is not None and c.number == ref.number and c.rule == "override"
        seen = set()
        for ref in ctx.root_refs:
            name = g.canonical(ref.pri.text)
            if name is None or name in seen:
                continue
            seen.add(name)
            if name not in overridden and ref.number is not None:
                c = res.choices[name]
                assert c.rule == "root"
                assert c.number == (ref.number if ref.number in visible(g, name, ctx.pin_us) else None)


@SETTINGS
@given(cases())
def test_every_disagreement_is_reported(drawn: Case) -> None:
    for case in _under(drawn):
        res = resolve(case.graph, case.context)
        by_pri = {c.pri: c for c in res.conflicts}
        assert len(by_pri) == len(res.conflicts)
        for name, c in res.choices.items():
            if len({r.number for r in c.requests}) > 1 or c.rule == "conflict":
                assert c.conflict is not None and by_pri[name] == c.conflict
                assert c.conflict.chosen == c.number
            else:
                assert c.conflict is None
        assert set(by_pri) <= set(res.choices) | {p for p, x in by_pri.items() if "do not settle" in x.message}


@SETTINGS
@given(cases())
def test_highest_and_lowest_bound_the_requests(drawn: Case) -> None:
    for case in _under(drawn, ("highest", "lowest")):
        res = resolve(case.graph, case.context)
        for name, c in res.choices.items():
            if not c.rule.startswith("strategy:"):
                continue
            asks = [n for _, n in _valid_asks(case, res, name)]
            if not asks:
                assert c.number == preferred(case.graph, case.context, name)
            elif case.context.strategy == "highest":
                assert c.number is not None and all(c.number >= n for n in asks) and c.number in asks
            else:
                assert c.number is not None and all(c.number <= n for n in asks) and c.number in asks


@settings(SETTINGS, max_examples=150)
@given(cases(acyclic=True, strategies=("strict",)))
def test_strict_reports_exactly_the_disagreements(case: Case) -> None:
    g, ctx = case.graph, case.context
    res = resolve(g, ctx)
    expected_conflicts = set()
    for name, c in res.choices.items():
        asks = {n for _, n in _valid_asks(case, res, name)}
        if len(asks | set(root_numbers(g, ctx, name))) > 1:
            expected_conflicts.add(name)
        if _fixed(case, name):
            continue
        if len(asks) > 1:
            assert c.number is None and c.rule == "conflict"
        elif asks:
            assert c.number == asks.pop() and c.rule == "strategy:strict"
        else:
            assert c.number == preferred(g, ctx, name)
    assert {c.pri for c in res.conflicts} == expected_conflicts


@SETTINGS
@given(cases())
def test_latest_and_nearest_pick_by_their_rule(drawn: Case) -> None:
    for case in _under(drawn, ("latest", "nearest")):
        g, ctx = case.graph, case.context
        res = resolve(g, ctx)
        places = reach(g, res)
        for name, c in res.choices.items():
            if not c.rule.startswith("strategy:"):
                continue
            if ctx.strategy == "latest":
                assert c.number == preferred(g, ctx, name)
                continue
            asks = [(places[dep.rsplit("@", 1)[0]], n) for dep, n in _valid_asks(case, res, name)]
            if asks:
                (hops, root), n = min(asks, key=lambda a: (a[0][0], a[0][1], -a[1]))
                assert c.number == n
            else:
                assert c.number == preferred(g, ctx, name)


@settings(SETTINGS, max_examples=100)
@given(cases(strategies=("latest",)))
def test_the_walk_for_latest_equals_the_general_order(case: Case) -> None:
    fast = resolve(case.graph, case.context).to_json()
    general = resolve(case.graph, case.context.replace(strategy=_GeneralLatest.name)).to_json()
    for doc in (fast, general):
        doc["context"].pop("strategy")
        for c in doc["choices"].values():
            c.pop("detail")
            c["rule"] = c["rule"].replace(_GeneralLatest.name, "latest")
            if c["conflict"]:
                c["conflict"]["strategy"] = "latest"
                c["conflict"]["message"] = c["conflict"]["message"].replace(_GeneralLatest.name, "latest")
        for c in doc["conflicts"]:
            c["strategy"] = "latest"
            c["message"] = c["message"].replace(_GeneralLatest.name, "latest")
    assert fast == general
