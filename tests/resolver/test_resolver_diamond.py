"""The diamond of the issue, under every strategy, with labels and pins.

p4@1 -> p2@2 and p3@2; p2@2 -> p1@1; p3@2 -> p1@2; p1@3 is published later
and nobody asks for it. Roots: [p4].
"""

from __future__ import annotations

import json

import pytest

from prodfs.resolution.context import Context
from prodfs.resolution.resolver import Choice, resolve
from tests.resolver.rgraphs import build

P1, P2, P3, P4 = "spies:p1-x", "spies:p2-x", "spies:p3-x", "spies:p4-x"
P1_3_CREATED = 100


def diamond(labels: dict | None = None):  # type: ignore[no-untyped-def]
    return build(
        {
            P1: {1: (10, []), 2: (20, []), 3: (P1_3_CREATED, [])},
            P2: {1: (10, []), 2: (30, [f"{P1}@1"])},
            P3: {1: (10, []), 2: (30, [f"{P1}@2"])},
            P4: {1: (40, [f"{P2}@2", f"{P3}@2"])},
        },
        labels,
    )


# nearest: both requests come from dependents one hop from the same root
# (p2@2 and p3@2 are p4's dependencies), so hops and root order tie and the
# higher version, 2, wins
EXPECTED = {"latest": 3, "highest": 2, "lowest": 1, "nearest": 2, "strict": None}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_diamond_under_each_strategy(strategy: str) -> None:
    res = resolve(diamond(), Context(roots=(P4,), strategy=strategy))
    choice = res.choose(P1)
    assert choice is not None
    assert choice.number == EXPECTED[strategy]
    assert choice.in_graph
    assert choice.candidates == (1, 2, 3)
    # the other products agree: no conflict, newest asked
    assert [res.choose(p).number for p in (P2, P3, P4)] == [2, 2, 1]  # type: ignore[union-attr]
    assert res.errors == []
    # the diamond is reported whatever the strategy
    assert [c.pri for c in res.conflicts] == [P1]
    conflict = res.conflicts[0]
    assert choice.conflict == conflict
    assert conflict.chosen == EXPECTED[strategy]
    assert conflict.strategy == strategy
    assert {(r.dependent, r.number) for r in conflict.requests} == {(f"{P2}@2", 1), (f"{P3}@2", 2)}
    assert all(r.hops == 2 and r.root == 0 for r in conflict.requests)
    json.dumps(res.to_json())  # the whole resolution is plain JSON


def test_strict_conflict_names_who_asked_for_what() -> None:
    res = resolve(diamond(), Context(roots=(P4,), strategy="strict"))
    c = res.choose(P1)
    assert c is not None and c.number is None and c.rule == "conflict"
    msg = res.conflicts[0].message
    assert f"{P2}@2 asks for {P1}@1" in msg
    assert f"{P3}@2 asks for {P1}@2" in msg
    assert "no version" in msg


def test_rules_name_what_chose() -> None:
    res = resolve(diamond(), Context(roots=(P4,), strategy="highest"))
    rules = {p: res.choose(p).rule for p in (P1, P2, P3, P4)}  # type: ignore[union-attr]
    assert rules == {P1: "strategy:highest", P2: "strategy:highest", P3: "strategy:highest", P4: "newest"}


def test_label_preference_changes_latest() -> None:
    g = diamond({P1: {"approved": 1}})
    res = resolve(g, Context(roots=(P4,), strategy="latest", prefer=("approved",)))
    c = res.choose(P1)
    assert c is not None and c.number == 1 and c.detail == "preference:approved"
    # without the preference the label is not looked at
    assert resolve(g, Context(roots=(P4,), strategy="latest")).choose(P1).number == 3  # type: ignore[union-attr]
    # the preference does not move what highest picks among requests
    highest = resolve(g, Context(roots=(P4,), strategy="highest", prefer=("approved",)))
    assert highest.choose(P1).number == 2  # type: ignore[union-attr]


def test_pin_before_p1_3_hides_it() -> None:
    g = diamond({P1: {"approved": 3}})
    ctx = Context(roots=(P4,), strategy="latest", prefer=("approved",), pin_us=P1_3_CREATED - 1)
    res = resolve(g, ctx)
    c = res.choose(P1)
    # p1@3 is invisible, and so is the approved label on it
    assert c is not None and c.number == 2 and c.candidates == (1, 2)
    assert res.errors == []
    # at the moment p1@3 is created it is visible
    assert resolve(g, ctx.replace(pin_us=P1_3_CREATED)).choose(P1).number == 3  # type: ignore[union-attr]


def test_explain_tells_the_whole_story() -> None:
    res = resolve(diamond(), Context(roots=(P4,), strategy="strict", workspace="walter"))
    text = res.explain(P1)
    for part in ("workspace walter", "strategy strict", f"{P2}@2 asks for @1", f"{P3}@2 asks for @2",
                 "rule: conflict", "no version (EIO)", "candidates: 1, 2, 3"):
        assert part in text
    assert "unknown" in res.explain("spies:nothing-x")


def test_choice_is_plain_frozen_data() -> None:
    res = resolve(diamond(), Context(roots=(P4,)))
    c = res.choose(P1)
    assert isinstance(c, Choice)
    with pytest.raises(AttributeError):
        c.number = 1  # type: ignore[misc]
    assert json.loads(json.dumps(c.to_json()))["number"] == 3
