"""A live mount while someone publishes: open stages stay as they were, new opens see the new version.

This is the one test that publishes (to the scratch service): a new version
of the model, which the lighting layer reaches through the animation, the
rig, the layout and the look.

How "a new open" is made matters, because of USD itself: its layer registry
is per process and keeps every layer an open stage uses, keyed by path. A
second ``Usd.Stage.Open`` of the same path in a session that still holds the
first stage gets the *same* layers back, so it cannot tell what the mount
serves now. A DCC session behaves exactly so until it reloads; a DCC
started afresh, or a farm job, opens in a new process. The test checks all
three: the open stage and a second in-process open are unchanged, a new
process sees the new version, and an explicit ``Reload()`` (a DCC's "reload
all") picks it up in place.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest

from prodfs_demo import check_stage
from pvc_client import PVCClient
from tests.support.demo_fixtures import call
from tests.support.mount import prodfs, wait_for
from tests.usd.conftest import Scratch
from tests.usd.support import LAYER, LGT, MODEL, composed, open_stage, problems_in_new_process

pytestmark = pytest.mark.fuse

RADIUS = "/walter/geo/body.radius"
STAMP = "/walter.demo:model"
NEW_RADIUS = 2.5


def _next_model(scratch: Scratch, newest: int, dest: Path) -> Path:
    """The model's newest version with another radius and its own stamp: what a modeller publishes next."""
    from pxr import Sdf

    shutil.copytree(scratch.plan.directory(MODEL, newest), dest)
    layer = Sdf.Layer.FindOrOpen(str(dest / LAYER[MODEL]))
    layer.GetAttributeAtPath(RADIUS).default = NEW_RADIUS
    layer.GetAttributeAtPath(STAMP).default = f"{MODEL}@{newest + 1}"
    assert layer.Save()
    return dest


def test_publish_under_an_open_stage(scratch: Scratch, tmp_path: Path) -> None:
    show = scratch.show
    newest = len(call(scratch.url, lambda c: c.list_versions(MODEL)))
    assert newest == max(show.products[MODEL].versions), "only this test publishes to the scratch service"
    before = show.compose(LGT, show.selection())
    after = {**before, RADIUS: NEW_RADIUS, STAMP: f"{MODEL}@{newest + 1}"}
    assert before[RADIUS] != NEW_RADIUS
    source = _next_model(scratch, newest, tmp_path / "model-next")

    with scratch.mount("--live-timeout", "0.5") as mnt:
        layer_path = mnt / LGT / LAYER[LGT]
        stage = open_stage(layer_path)
        assert check_stage(stage, before) == []
        # the render job's record of this moment: the ID a farm job would carry
        snapshot = prodfs("snapshot", str(mnt.path)).stdout.strip()

        async def publish(c: PVCClient) -> dict:
            return await c.publish_directory(MODEL, source, message="bigger body")

        assert call(scratch.url, publish)["number"] == newest + 1
        wait_for(lambda: os.getxattr(mnt / MODEL, "user.prodfs.pri") == f"{MODEL}@{newest + 1}".encode(),
                 timeout=15)

        # already open: unchanged (its crate layer is still mapped from the version it opened)
        assert check_stage(stage, before) == []
        again = open_stage(layer_path)  # same process: USD hands back the layers it holds
        assert composed(again, [RADIUS, STAMP]) == {RADIUS: before[RADIUS], STAMP: before[STAMP]}
        del again
        # a new process (a DCC started now, a farm job) composes the new model
        assert problems_in_new_process(layer_path, after) == []
        # a DCC's "reload" re-reads the layers whose files changed: the versionless path now names the new version
        stage.Reload()
        assert check_stage(stage, after) == []
        del stage
        gc.collect()

    record = call(scratch.url, lambda c: c.get_snapshot(snapshot))["record"]
    assert record["choices"][MODEL] == newest  # the snapshot still names what the stage composed then
