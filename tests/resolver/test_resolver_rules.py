"""Roots, overrides, aliases, products outside the graph, errors and diff."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from prodfs.resolution import strategies
from prodfs.resolution.context import Context
from prodfs.resolution.graph import ProductInfo
from prodfs.resolution.resolver import Request, diff, resolve
from prodfs.resolution.strategies import ChoiceEnv, Strategy
from tests.resolver.rgraphs import build

A, B, C, D = "s:a-x", "s:b-x", "s:c-x", "s:d-x"


def chain():  # type: ignore[no-untyped-def]
    """a@1 -> b@1; a@2 -> b@2 -> c@1; c has 3 versions; d is outside."""
    return build(
        {
            A: {1: (10, [f"{B}@1"]), 2: (20, [f"{B}@2"])},
            B: {1: (5, []), 2: (15, [f"{C}@1"])},
            C: {1: (1, []), 2: (12, []), 3: (50, [])},
            D: {1: (1, []), 2: (2, [])},
        },
        {C: {"approved": 2}, D: {"published": 1}},
        {B: ["s:b_old-x"]},
    )


def numbers(res) -> dict[str, int | None]:  # type: ignore[no-untyped-def]
    return {p: c.number for p, c in res.choices.items()}


def test_versionless_root_follows_preference_then_newest() -> None:
    g = chain()
    assert numbers(resolve(g, Context(roots=(A,)))) == {A: 2, B: 2, C: 3}
    res = resolve(g, Context(roots=(A,), prefer=("approved",)))
    assert numbers(res) == {A: 2, B: 2, C: 2}
    assert res.choose(A).rule == "newest"  # type: ignore[union-attr]


def test_explicit_root_version_is_chosen_and_its_dependencies_followed() -> None:
    res = resolve(chain(), Context(roots=(f"{A}@1",), strategy="highest"))
    assert numbers(res) == {A: 1, B: 1}  # b@1 has no dependencies: c is outside
    assert res.choose(A).rule == "root"  # type: ignore[union-attr]
    assert not res.choose(C).in_graph  # type: ignore[union-attr]
    # latest takes b's newest whatever a@1 asks, and follows b@2 to c
    res = resolve(chain(), Context(roots=(f"{A}@1",)))
    assert numbers(res) == {A: 1, B: 2, C: 3}
    assert res.choose(B).conflict is None  # one request, no diamond  # type: ignore[union-attr]


def test_label_root() -> None:
    g = chain()
    res = resolve(g, Context(roots=(f"{C}@approved",)))
    assert res.choose(C).number == 2 and res.choose(C).rule == "root-label:approved"  # type: ignore[union-attr]
    res = resolve(g, Context(roots=(f"{C}@latest",), pin_us=20))
    assert res.choose(C).number == 2 and res.choose(C).rule == "root-label:latest"  # type: ignore[union-attr]
    res = resolve(g, Context(roots=(f"{C}@published",)))
    assert res.choose(C).number is None and res.choose(C).in_graph  # type: ignore[union-attr]
    assert res.errors == [f"root {C}@published: no visible version has label 'published'"]


def test_root_version_missing_or_after_pin_is_an_error_not_an_exception() -> None:
    g = chain()
    res = resolve(g, Context(roots=(f"{C}@9", A)))
    assert res.choose(C).number is None  # type: ignore[union-attr]
    assert any("does not exist" in e and f"{C}@9" in e for e in res.errors)
    # the other root still resolves; c is a root, so a@2's chain does not move it
    assert res.choose(A).number == 2  # type: ignore[union-attr]
    res = resolve(g, Context(roots=(f"{C}@3",), pin_us=20))
    assert res.choose(C).number is None  # type: ignore[union-attr]
    assert res.errors == [f"root {C}@3: {C}@3 is after the pin"]
    res = resolve(g, Context(roots=("s:nothing-x",)))
    assert res.choices == {} and res.errors == ["root s:nothing-x: unknown product"]


def test_overrides_beat_roots_strategies_and_preference() -> None:
    g = chain()
    ctx = Context(roots=(f"{A}@2",), overrides=(f"{A}@1", f"{C}@1", f"{D}@2"), prefer=("published",),
                  strategy="highest")
    res = resolve(g, ctx)
    # a is overridden to 1, so b@1 is what a asks for and c is not in the graph
    assert numbers(res) == {A: 1, B: 1}
    assert res.choose(A).rule == "override"  # type: ignore[union-attr]
    # outside the graph overrides still win
    assert res.choose(C).number == 1 and res.choose(C).rule == "override"  # type: ignore[union-attr]
    assert res.choose(D).number == 2 and not res.choose(D).in_graph  # type: ignore[union-attr]
    # the root's own request is kept for "why", and it disagrees with the override
    assert [(r.dependent, r.number) for r in res.choose(A).requests] == [(None, 2)]  # type: ignore[union-attr]


def test_override_inside_graph_is_followed() -> None:
    res = resolve(chain(), Context(roots=(f"{A}@1",), overrides=(f"{B}@2",)))
    assert numbers(res) == {A: 1, B: 2, C: 3}
    assert res.choose(B).rule == "override"  # type: ignore[union-attr]


def test_override_to_missing_version_is_an_error() -> None:
    res = resolve(chain(), Context(roots=(A,), overrides=(f"{C}@7", "s:nothing-x@1")))
    assert res.choose(C).number is None and res.choose(C).rule == "override"  # type: ignore[union-attr]
    assert res.errors == [
        f"override {C}@7: {C}@7 does not exist; {C} gets no version",
        "override s:nothing-x@1: unknown product",
    ]


def test_overrides_of_one_product_by_two_names() -> None:
    res = resolve(chain(), Context(roots=(A,), overrides=(f"{B}@1", "s:b_old-x@2")))
    assert res.choose(B).number == 1  # type: ignore[union-attr]
    assert res.errors == [f"override s:b_old-x@2: {B} is already overridden; ignored"]


def test_aliases_in_roots_dependencies_and_lookups() -> None:
    g = build(
        {A: {1: (1, ["s:b_old-x@1"])}, B: {1: (1, [])}},
        aliases={B: ["s:b_old-x"]},
    )
    res = resolve(g, Context(roots=("s:b_old-x@1", A)))
    assert numbers(res) == {A: 1, B: 1}
    assert res.choose("s:b_old-x") is res.choose(B)
    assert [r.dependent for r in res.choose(B).requests] == [None, f"{A}@1"]  # type: ignore[union-attr]


def test_outside_the_graph_resolves_on_demand_and_memoized() -> None:
    g = chain()
    res = resolve(g, Context(roots=(f"{A}@1",), prefer=("approved", "published"), pin_us=30, strategy="highest"))
    c = res.choose(C)
    assert c is not None and (c.number, c.rule, c.in_graph) == (2, "preference:approved", False)
    assert res.choose(C) is c
    assert res.choose(D).rule == "preference:published"  # type: ignore[union-attr]
    res = resolve(g, Context(roots=(f"{A}@1",), pin_us=30, strategy="highest"))
    assert (res.choose(C).number, res.choose(C).rule) == (2, "newest")  # type: ignore[union-attr]
    # nothing visible at the pin, or unknown
    assert resolve(g, Context(pin_us=0)).choose(C) is None
    assert res.choose("s:nothing-x") is None
    assert C not in res.choices  # on-demand answers do not join the graph


def test_label_after_the_pin_is_ignored_with_a_live_graph() -> None:
    g = chain()  # c: approved on 2, created at 12
    res = resolve(g, Context(roots=(C,), prefer=("approved",), pin_us=11))
    assert res.choose(C).number == 1 and res.choose(C).rule == "newest"  # type: ignore[union-attr]


def test_dependency_errors_are_reported_and_resolution_goes_on() -> None:
    g = build({
        A: {1: (10, [f"{B}@1", f"{B}@5", "s:ghost-x@1", f"{C}@2"])},
        B: {1: (1, [])},
        C: {1: (1, []), 2: (20, [])},
    })
    res = resolve(g, Context(roots=(A,), pin_us=15, strategy="highest"))
    assert numbers(res) == {A: 1, B: 1, C: 1}
    assert res.errors == [
        f"{A}@1 depends on {B}@5, which does not exist",
        f"{A}@1 depends on {C}@2, which is after the pin",
        f"{A}@1 depends on unknown product s:ghost-x",
    ]
    # invalid requests are not handed to strategies nor kept as requests
    assert [r.number for r in res.choose(B).requests] == [1]  # type: ignore[union-attr]
    # c's only request was invisible: it is in the graph, by preference
    assert res.choose(C).in_graph and res.choose(C).number == 1  # type: ignore[union-attr]


def test_two_roots_for_one_product_first_wins_and_it_is_reported() -> None:
    res = resolve(chain(), Context(roots=(f"{C}@1", f"{C}@2")))
    assert res.choose(C).number == 1  # type: ignore[union-attr]
    assert [c.pri for c in res.conflicts] == [C]
    assert res.conflicts[0].strategy == "root" and res.conflicts[0].chosen == 1


def test_a_root_that_dependents_disagree_with_keeps_its_version() -> None:
    g = build({A: {1: (1, [f"{B}@1"])}, B: {1: (1, []), 2: (2, [])}})
    for strategy in ("strict", "lowest"):
        res = resolve(g, Context(roots=(A, f"{B}@2"), strategy=strategy))
        assert res.choose(B).number == 2  # type: ignore[union-attr]
        (conflict,) = res.conflicts
        assert (conflict.pri, conflict.chosen, conflict.strategy) == (B, 2, "root")
        assert f"{A}@1 asks for {B}@1" in conflict.message and "the root asks for" in conflict.message


def test_nearest_prefers_fewer_hops_then_earlier_root() -> None:
    # r1@1 -> m@1 -> x@1 ; r1@1 -> x@2 (nearer) ; r2@1 -> y@1 -> x@3
    R1, R2, M, X, Y = "s:r1-x", "s:r2-x", "s:m-x", "s:x-x", "s:y-x"
    g = build({
        R1: {1: (5, [f"{M}@1", f"{X}@2"])},
        R2: {1: (5, [f"{Y}@1"])},
        M: {1: (3, [f"{X}@1"])},
        Y: {1: (3, [f"{X}@3"])},
        X: {1: (1, []), 2: (1, []), 3: (1, [])},
    })
    assert resolve(g, Context(roots=(R1, R2), strategy="nearest")).choose(X).number == 2  # type: ignore[union-attr]
    # without the near request: m@1 (root 0) and y@1 (root 1) are both 2 hops
    g.products[R1].versions[1] = g.products[R1].versions[1].__class__(1, 5, g.products[R1].versions[1].dependencies[:1])
    assert resolve(g, Context(roots=(R1, R2), strategy="nearest")).choose(X).number == 1  # type: ignore[union-attr]
    assert resolve(g, Context(roots=(R2, R1), strategy="nearest")).choose(X).number == 3  # type: ignore[union-attr]
    res = resolve(g, Context(roots=(R2, R1), strategy="nearest"))
    assert {(r.dependent, r.hops, r.root) for r in res.choose(X).requests} == {  # type: ignore[union-attr]
        (f"{M}@1", 2, 1), (f"{Y}@1", 2, 0)}


def test_unknown_strategy_is_an_error_and_resolves_strictly() -> None:
    g = build({A: {1: (1, [f"{B}@1", f"{C}@1"])}, B: {1: (1, [f"{C}@2"])}, C: {1: (1, []), 2: (2, [])}})
    res = resolve(g, Context(roots=(A,), strategy="no_such"))
    assert res.choose(C).number is None and res.choose(B).number == 1  # type: ignore[union-attr]
    (err,) = res.errors
    assert "unknown strategy 'no_such'" in err and "highest" in err and "strict" in err


class _Broken(Strategy):
    name = "test_broken"

    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        if product.pri == B:
            raise RuntimeError("boom")
        return 99 if product.pri == C else env.preferred()


@pytest.fixture
def broken() -> Iterator[None]:
    strategies.register(_Broken)
    yield
    strategies._registry.pop(_Broken.name, None)


def test_a_misbehaving_strategy_is_reported_not_fatal(broken: None) -> None:
    g = build({A: {1: (1, [f"{B}@1", f"{C}@1", f"{D}@1"])}, B: {1: (1, [])}, C: {1: (1, [])}, D: {1: (1, [])}})
    res = resolve(g, Context(roots=(A,), strategy="test_broken"))
    assert numbers(res) == {A: 1, B: None, C: None, D: 1}
    assert res.errors == [
        f"strategy test_broken chose {C}@99, which is not visible",
        f"strategy test_broken failed on {B}: RuntimeError('boom')",
    ]


def test_diff_lists_what_moved() -> None:
    g = chain()
    old = resolve(g, Context(roots=(A,), pin_us=20))
    new = resolve(g, Context(roots=(A,)))
    assert diff(old, new) == [(C, 2, 3)]
    assert diff(old, new, [D, C, "s:nothing-x"]) == [(C, 2, 3)]
    assert diff(new, new) == []
    moved = diff(resolve(g, Context(roots=(f"{A}@1",), strategy="highest")), new)
    assert moved == [(A, 1, 2), (B, 1, 2)]  # c is 3 in both: on demand, then in the graph


def test_a_dependency_with_nothing_visible_at_the_pin_is_no_conflict() -> None:
    g = build({A: {1: (10, [f"{B}@1"])}, B: {1: (50, [])}})
    for strategy in ("latest", "strict"):
        res = resolve(g, Context(roots=(A,), pin_us=20, strategy=strategy))
        c = res.choose(B)
        assert c is not None and c.in_graph and (c.number, c.rule, c.candidates) == (None, "newest", ())
        assert res.conflicts == []
        assert res.errors == [f"{A}@1 depends on {B}@1, which is after the pin"]


class _Refuses(Strategy):
    name = "test_refuses"

    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        return None


def test_a_strategy_that_gives_no_version_makes_a_conflict_even_when_all_agree() -> None:
    strategies.register(_Refuses)
    try:
        g = build({A: {1: (1, [f"{B}@1"])}, B: {1: (1, [])}})
        res = resolve(g, Context(roots=(A,), strategy="test_refuses"))
    finally:
        strategies._registry.pop(_Refuses.name, None)
    c = res.choose(B)
    assert c is not None and c.number is None and c.rule == "conflict"
    assert res.conflicts == [c.conflict]
    assert c.conflict.message == f"{B}: {A}@1 asks for {B}@1 -> test_refuses: no version"  # type: ignore[union-attr]
