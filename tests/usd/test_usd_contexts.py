"""A DCC opens versionless paths; the mount's context decides what the stage composes.

Each test opens the lighting layer, ``MNT/spies:100:10-lgt:walter/walter.usda``,
with ``Usd.Stage.Open``, exactly as usdview or a DCC would, and checks that
the composed stage holds the values of the versions the context selects
(docs/demo.md): values that differ between versions (the body's radius, the
key light), prims that exist in one version only (the hat, the rim light),
and a variant selection that a later version overrides.

The diamond: ``--root spies:100:10-lgt:walter@3`` pulls anim@2 (whose layout is
on model@2 but whose rig is on model@1) and look@2 (on model@2), so the model
is asked for at versions 1 and 2, and nothing asks for model@3, the newest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from prodfs_demo import DemoShow, check_stage
from tests.support.mount import Mount, mounted, prodfs
from tests.usd.conftest import day3_date
from tests.usd.support import (LAYER, LGT, MODEL, composed, flat_text, mounted_together, open_stage, resolved_refs,
                               used_products)

pytestmark = pytest.mark.fuse

DIAMOND_ROOT = f"{LGT}@3"
# what each strategy picks for the model, asked for at 1 (rig@1) and 2 (layout@2, look@2);
# "nearest": look@2 asks from two hops, the others from three
DIAMOND_MODEL = {"highest": 2, "lowest": 1, "nearest": 2}
RADIUS = "/walter/geo/body.radius"
HAT = "/walter/geo/hat"


def _lgt(root: os.PathLike[str] | str, name: str = LGT):  # noqa: ANN202 - a pxr Usd.Stage
    return open_stage(os.path.join(root, name, LAYER[LGT]))


def _assert_composes(show: DemoShow, mount: Mount, selection: dict[str, int], name: str = LGT) -> None:
    """The stage composes ``selection``, and the mount says it served exactly those versions."""
    stage = _lgt(mount.path, name)
    assert check_stage(stage, show.compose(LGT, selection)) == []
    resolved = resolved_refs(mount)
    for used in used_products(stage, mount.path):
        if "@" not in used:  # versionless: the context chose; the mount records what it served
            assert resolved[used] == f"{used}@{selection[used]}", used


def _diamond_selection(show: DemoShow, strategy: str) -> dict[str, int]:
    if strategy == "latest":  # the newest of everything but the root
        return {**show.selection(), LGT: 3}
    # the root's own dependencies, but the model as the strategy settles the diamond
    return {**show.deps_selection(LGT, 3), MODEL: DIAMOND_MODEL[strategy]}


def test_the_show_has_the_diamond_these_tests_rely_on(published: DemoShow) -> None:
    assert {"version": DIAMOND_ROOT, "product": MODEL, "numbers": [1, 2]} in published.diamonds()
    assert published.selection()[MODEL] == 3


def test_live_mount_composes_the_newest_versions(published: DemoShow, live_mount: Mount) -> None:
    _assert_composes(published, live_mount, published.selection())
    values = composed(_lgt(live_mount.path), [HAT, "/walter{look}", "/lights/key.inputs:intensity"])
    assert values == {HAT: True, "/walter{look}": "gold", "/lights/key.inputs:intensity": 2.0}


def test_mount_pinned_to_a_date_composes_that_day(published: DemoShow, live_mount: Mount,
                                                  day3_mount: Mount) -> None:
    day3 = published.selection(published.pins()["day3"])
    assert day3 != published.selection()
    _assert_composes(published, day3_mount, day3)
    assert day3_mount.control("context.json")["context"]["pin"].startswith(day3_date(published))
    keys = [HAT, RADIUS, "/lights/rim", "/lights/key.inputs:intensity", "/walter.demo:lgt"]
    then, now = composed(_lgt(day3_mount.path), keys), composed(_lgt(live_mount.path), keys)
    assert then == {HAT: False, RADIUS: 1.5, "/lights/rim": False, "/lights/key.inputs:intensity": 1.5,
                    "/walter.demo:lgt": f"{LGT}@2"}
    assert all(then[k] != now[k] for k in (HAT, "/lights/rim", "/lights/key.inputs:intensity"))


def test_explicit_version_in_the_path_composes_with_the_mounts_neighbours(published: DemoShow,
                                                                          day3_mount: Mount) -> None:
    # lgt@3 was published on day 4: after the pin, so the day-3 mount does not show it at all
    assert not os.path.exists(day3_mount / f"{LGT}@3")
    # lgt@1 exists then: its own layer is v1, the layers it points at are the pinned neighbours
    _assert_composes(published, day3_mount, {**published.selection(published.pins()["day3"]), LGT: 1},
                     name=f"{LGT}@1")
    stage = _lgt(day3_mount.path, f"{LGT}@1")
    assert composed(stage, ["/walter.demo:lgt", "/walter.demo:anim"]) == {
        "/walter.demo:lgt": f"{LGT}@1", "/walter.demo:anim": "spies:100:10-anim:walter@2"}


@pytest.fixture(scope="module")
def diamond(tmp_path_factory: pytest.TempPathFactory, service_url: str) -> Iterator[dict[str, Mount]]:
    """Mounts rooted at lgt@3: one per strategy, and ``lowest`` with an override of the model."""
    contexts = {s: ("--root", DIAMOND_ROOT, "--strategy", s) for s in [*DIAMOND_MODEL, "latest", "strict"]}
    contexts["override"] = ("--root", DIAMOND_ROOT, "--strategy", "lowest", "--override", f"{MODEL}@3")
    with mounted_together(tmp_path_factory.mktemp("usd-diamond"), service_url, contexts,
                          allow_log={"strict": re.compile("unresolved conflict")}) as mounts:
        yield mounts


@pytest.mark.parametrize("strategy", ["latest", "highest", "lowest", "nearest"])
def test_each_strategy_settles_the_diamond_under_an_explicit_root(published: DemoShow, diamond: dict[str, Mount],
                                                                  strategy: str) -> None:
    selection = _diamond_selection(published, strategy)
    mnt = diamond[strategy]
    _assert_composes(published, mnt, selection)
    values = composed(_lgt(mnt.path), [RADIUS, HAT, "/walter.demo:lgt", "/walter.demo:model"])
    model = published.products[MODEL].versions[selection[MODEL]].values
    assert values == {RADIUS: model[RADIUS], HAT: selection[MODEL] >= 3, "/walter.demo:lgt": DIAMOND_ROOT,
                      "/walter.demo:model": f"{MODEL}@{selection[MODEL]}"}
    rule = os.getxattr(mnt / MODEL, "user.prodfs.rule").decode()
    assert rule == f"strategy:{strategy}"  # a product of the graph that no root names
    conflicts = {c["pri"]: c for c in mnt.control("conflicts.json")["conflicts"]}
    if strategy == "latest":  # the newest versions all ask for model@3: no diamond left
        assert MODEL not in conflicts
    else:
        assert {r["number"] for r in conflicts[MODEL]["requests"]} == {1, 2}
        assert conflicts[MODEL]["chosen"] == selection[MODEL]


def test_strict_leaves_the_diamond_unresolved_and_the_stage_says_so(published: DemoShow,
                                                                    diamond: dict[str, Mount]) -> None:
    stage = _lgt(diamond["strict"].path)
    errors = [str(e) for e in stage.GetCompositionErrors()]
    # every reference to the model fails to resolve; nothing is silently served in its place
    assert errors and all("model.usdc" in e for e in errors), errors
    assert composed(stage, [RADIUS, "/walter/geo"]) == {RADIUS: None, "/walter/geo": False}
    # the rest of the shot composes as the root's dependencies say
    rest = published.compose(LGT, published.deps_selection(LGT, 3))
    keys = ["/walter.demo:anim", "/walter.demo:look", "/lights/key.inputs:intensity", "/walter{look}"]
    assert composed(stage, keys) == {k: rest[k] for k in keys}


def test_an_override_wins_and_a_snapshot_of_it_composes_the_same_stage(published: DemoShow, service_url: str,
                                                                      diamond: dict[str, Mount],
                                                                      tmp_path: Path) -> None:
    # lowest alone takes model@1; the override puts model@3 (with the hat) in the diamond's place
    selection = {**published.deps_selection(LGT, 3), MODEL: 3}
    mnt = diamond["override"]
    _assert_composes(published, mnt, selection)
    assert os.getxattr(mnt / MODEL, "user.prodfs.rule") == b"override"
    assert composed(_lgt(mnt.path), [HAT, RADIUS]) == {HAT: True, RADIUS: 1.5}
    text = flat_text(_lgt(mnt.path), [mnt.path])
    snapshot = prodfs("snapshot", str(mnt.path)).stdout.strip()
    with mounted(tmp_path, service_url, "--snapshot", snapshot, name="render") as render:
        _assert_composes(published, render, selection)
        assert os.getxattr(render / MODEL, "user.prodfs.rule") == b"snapshot"
        # the render node composes the very stage the artist saw, byte for byte
        assert flat_text(_lgt(render.path), [render.path]) == text
