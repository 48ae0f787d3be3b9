"""Contexts: validation, JSON round trips, workspace records, descriptions."""

from __future__ import annotations

import pytest

from prodfs.resolution.context import Context
from pvc_client import InvalidInput, InvalidPRI, InvalidTime, parse_time, to_micros

ROOT = "spies:100:10-lgt:walter"
PIN = "2019-01-24T18:00:00.000000Z"
PIN_US = to_micros(parse_time(PIN))


def test_defaults_are_live_latest_and_empty() -> None:
    ctx = Context()
    assert (ctx.roots, ctx.strategy, ctx.pin_us, ctx.prefer, ctx.overrides) == ((), "latest", None, (), ())
    assert ctx.live


def test_json_round_trip_with_pin_as_iso_text() -> None:
    ctx = Context(roots=(ROOT, f"{ROOT}@3", f"{ROOT}@approved"), strategy="nearest", pin_us=PIN_US,
                  prefer=("approved", "published"), overrides=("spies:asset-tex@7",), workspace="w", snapshot=None)
    doc = ctx.to_json()
    assert doc == {"roots": [ROOT, f"{ROOT}@3", f"{ROOT}@approved"], "strategy": "nearest", "pin": PIN,
                   "prefer": ["approved", "published"], "overrides": ["spies:asset-tex@7"], "workspace": "w",
                   "snapshot": None}
    assert Context.from_json(doc) == ctx
    assert not ctx.live
    # lists are accepted and kept as tuples, so contexts stay hashable
    assert hash(Context(roots=[ROOT])) == hash(Context(roots=(ROOT,)))  # type: ignore[arg-type]


def test_pin_in_any_accepted_time_form() -> None:
    assert Context.from_json({"pin": "2019-01-24T19:00:00+01:00"}).pin_us == PIN_US
    assert Context.from_json({"pin": None}).pin_us is None
    with pytest.raises(InvalidTime):
        Context.from_json({"pin": "yesterday-ish"})


def test_from_workspace_record() -> None:
    record = {"name": "walter-lgt", "revision": 4, "roots": [ROOT], "strategy": "strict", "pin": PIN,
              "prefer": ["approved"], "overrides": [], "changed_at": PIN, "author": "x", "deleted": False}
    ctx = Context.from_workspace(record)
    assert ctx == Context(roots=(ROOT,), strategy="strict", pin_us=PIN_US, prefer=("approved",), workspace="walter-lgt")
    assert Context.from_workspace({"name": "w", "roots": [ROOT], "strategy": None}).strategy == "latest"


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"roots": ("not a pri",)}, InvalidPRI),
        ({"roots": (f"{ROOT}@0",)}, InvalidPRI),
        ({"roots": (f"{ROOT}@1.2.3",)}, InvalidPRI),
        ({"roots": ROOT}, InvalidInput),  # a bare string, not a list
        ({"roots": (3,)}, InvalidInput),
        ({"overrides": (ROOT,)}, InvalidPRI),  # an override names a version
        ({"overrides": (f"{ROOT}@approved",)}, InvalidPRI),
        ({"overrides": (f"{ROOT}@1", f"{ROOT}@2")}, InvalidInput),
        ({"prefer": ("Approved",)}, InvalidPRI),
        ({"strategy": ""}, InvalidInput),
        ({"strategy": "two words"}, InvalidInput),
        ({"pin_us": "2019"}, InvalidInput),
        ({"pin_us": True}, InvalidInput),
        ({"workspace": 3}, InvalidInput),
    ],
)
def test_bad_input_is_refused_clearly(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        Context(**kwargs)
    assert str(info.value)  # a message, not a bare exception


def test_same_override_twice_is_fine() -> None:
    assert Context(overrides=(f"{ROOT}@1", f"{ROOT}@1")).overrides == (f"{ROOT}@1", f"{ROOT}@1")


def test_replace_validates_and_keeps_the_rest() -> None:
    ctx = Context(roots=(ROOT,), strategy="highest")
    pinned = ctx.replace(pin_us=PIN_US)
    assert (pinned.roots, pinned.strategy, pinned.pin_us) == ((ROOT,), "highest", PIN_US)
    assert ctx.pin_us is None
    with pytest.raises(InvalidPRI):
        ctx.replace(roots=("bad",))
    assert pinned.replace(roots=(f"{ROOT}@2",)).root_refs[0].number == 2


def test_parsed_references() -> None:
    ctx = Context(roots=(ROOT, f"{ROOT}@approved"), overrides=("spies:asset-tex@7",))
    assert [str(r) for r in ctx.root_refs] == [ROOT, f"{ROOT}@approved"]
    assert ctx.override_refs[0].number == 7


def test_describe_for_logs() -> None:
    ctx = Context(roots=(ROOT,), strategy="nearest", pin_us=PIN_US, prefer=("approved",),
                  overrides=("spies:asset-tex@7",), workspace="walter-lgt")
    assert ctx.describe() == (
        f"workspace walter-lgt: strategy nearest; pinned {PIN}; prefer approved > newest; roots {ROOT}; "
        "overrides spies:asset-tex@7"
    )
    assert Context().describe() == "strategy latest; live; roots (none)"
    assert Context(snapshot="abc").describe().startswith("snapshot abc: ")
