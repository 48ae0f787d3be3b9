"""Cycles: dependency cycles that settle, choices that flip-flop, termination."""

from __future__ import annotations

import random

import pytest

from prodfs.resolution.context import Context
from prodfs.resolution.resolver import resolve
from tests.resolver.rgraphs import STRATEGIES, build, pri, reach, shuffled

R, A, B = "s:r-x", "s:a-x", "s:b-x"


def flip_flop():  # type: ignore[no-untyped-def]
    """Under highest: a@1 asks b@2, b@2 asks a@2, a@2 asks b@1, b@1 asks nothing.

    Rounds: (a1,b1) -> (a1,b2) -> (a2,b2) -> (a2,b1) -> (a1,b1) ... never settles.
    """
    return build({
        R: {1: (10, [f"{A}@1", f"{B}@1"])},
        A: {1: (1, [f"{B}@2"]), 2: (2, [f"{B}@1"])},
        B: {1: (1, []), 2: (2, [f"{A}@2"])},
    })


def test_flip_flop_is_reported_as_a_conflict_and_ends() -> None:
    res = resolve(flip_flop(), Context(roots=(R,), strategy="highest"))
    assert res.choose(R).number == 1  # type: ignore[union-attr]
    for p in (A, B):
        c = res.choose(p)
        assert c is not None and c.in_graph and c.number is None and c.rule == "conflict"
        assert c.conflict is not None and "do not settle" in c.conflict.message
        assert "@1" in c.conflict.message and "@2" in c.conflict.message
    assert sorted(c.pri for c in res.conflicts) == [A, B]
    assert res.errors == []


def test_latest_has_nothing_to_flip() -> None:
    res = resolve(flip_flop(), Context(roots=(R,), strategy="latest"))
    assert {p: c.number for p, c in res.choices.items()} == {R: 1, A: 2, B: 2}
    # b is asked for 1 (by r) and for 1 (by a@2): no disagreement; a for 1 and 2
    assert [c.pri for c in res.conflicts] == [A]


def test_self_dependency_that_flips_under_lowest() -> None:
    # p@2 asks for p@1; p@1 asks nothing; r asks for p@2
    g = build({R: {1: (5, [f"{A}@2"])}, A: {1: (1, []), 2: (2, [f"{A}@1"])}})
    res = resolve(g, Context(roots=(R,), strategy="lowest"))
    assert res.choose(A).number is None and "do not settle" in res.choose(A).conflict.message  # type: ignore[union-attr]
    # highest settles on 2 (its own request for 1 is a disagreement, reported)
    res = resolve(g, Context(roots=(R,), strategy="highest"))
    assert res.choose(A).number == 2 and res.choose(A).conflict.chosen == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_consistent_cycle_resolves_plainly(strategy: str) -> None:
    g = build({A: {1: (1, [f"{B}@1"])}, B: {1: (1, [f"{A}@1"])}})
    res = resolve(g, Context(roots=(A,), strategy=strategy))
    assert {p: c.number for p, c in res.choices.items()} == {A: 1, B: 1}
    assert res.choose(B).requests[0].hops == 1  # type: ignore[union-attr]
    assert res.conflicts == [] and res.errors == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_dense_random_cycles_terminate(strategy: str) -> None:
    """Every version of 40 products asks for random versions of random products."""
    rnd = random.Random(7)
    n = 40
    spec = {
        pri(i): {v: (v, [f"{pri(rnd.randrange(n))}@{rnd.randint(1, 3)}" for _ in range(3)]) for v in (1, 2, 3)}
        for i in range(n)
    }
    g = build(spec)
    res = resolve(g, Context(roots=(pri(0), pri(1)), strategy=strategy))
    # what is in the graph is exactly what the chosen versions reach
    assert set(res.choices) == set(reach(g, res))
    for c in res.choices.values():
        if c.number is None:
            assert c.conflict is not None
    # and it is the same whatever the order of the records
    assert resolve(shuffled(g, 3), Context(roots=(pri(0), pri(1)), strategy=strategy)).to_json() == res.to_json()
