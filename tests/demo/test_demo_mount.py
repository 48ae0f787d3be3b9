"""The published demo show through real ProdFS mounts: stages compose what the description says.

This is the demo's promise end to end: versionless relative paths between
products, resolved by the mount's context (live, or pinned to a day of the
history), compose the documented values.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from prodfs_demo import DemoShow, check_stage
from pvc_client import format_time
from tests.demo.conftest import open_layer
from tests.support.mount import mounted

pytestmark = pytest.mark.fuse

LGT = "spies:100:10-lgt:walter"


@pytest.fixture(autouse=True)
def _need_fuse() -> None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        if os.environ.get("CI"):
            pytest.fail("FUSE is not available (/dev/fuse, fusermount3): CI must have it")
        pytest.skip("FUSE is not available")


def _problems(show: DemoShow, root: Path, name: str, selection: dict[str, int]) -> list[str]:
    # the stage dies with this frame: a layer kept open would keep the mount busy at unmount
    return check_stage(open_layer(show, root, name), show.compose(name.partition("@")[0], selection))


def _check_all(show: DemoShow, root: Path, selection: dict[str, int]) -> None:
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(selection)
    for pri in selection:
        assert _problems(show, root, pri, selection) == [], pri


def test_live_mount_composes_the_newest_show(service_url: str, published: DemoShow, tmp_path: Path) -> None:
    selection = published.selection()
    with mounted(tmp_path, service_url) as mnt:
        _check_all(published, mnt.path, selection)
        # an explicit version of the shot: its own layer is v2, its neighbours are the mount's
        assert _problems(published, mnt.path, f"{LGT}@2", {**selection, LGT: 2}) == []
        # a label: approved moved to v3 after the history
        assert _problems(published, mnt.path, f"{LGT}@approved", {**selection, LGT: 3}) == []


def test_pinned_mount_composes_the_show_of_that_day(service_url: str, published: DemoShow,
                                                    tmp_path: Path) -> None:
    at = published.pins()["day3"]  # lighting v2 on the diamond; model without its hat
    selection = published.selection(at)
    assert selection != published.selection()
    with mounted(tmp_path, service_url, "--pin", format_time(at), name="day3") as mnt:
        _check_all(published, mnt.path, selection)
