"""The published demo show through real ProdFS mounts: stages compose what the description says.

This is the demo's promise end to end: versionless relative paths between
products, resolved by the mount's context (live, or pinned to a day of the
history), compose the documented values.

Stages are opened in a child process, as a DCC would: USD keeps crate files
open (memory-mapped) while a layer lives, and a file held by the test process
would keep the mount busy at unmount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prodfs_demo import DemoShow
from pvc_client import format_time
from tests.support.helpers import need_fuse
from tests.support.mount import mounted

pytestmark = pytest.mark.fuse

LGT = "spies:100:10-lgt:walter"

# argv: description JSON, mount root, JSON list of [name under the root, selection]
CHILD = """
import json, sys
from pxr import Usd
from prodfs_demo import Show, check_stage
show = Show.from_json(json.load(open(sys.argv[1])))
out = {}
for name, selection in json.loads(sys.argv[3]):
    pri = name.partition("@")[0]
    stage = Usd.Stage.Open(f"{sys.argv[2]}/{name}/{show.products[pri].layer}")
    out[name] = ["the layer did not open"] if stage is None else check_stage(stage, show.compose(pri, selection))
print(json.dumps(out))
"""


@pytest.fixture(autouse=True)
def _need_fuse() -> None:
    need_fuse()


@pytest.fixture
def described(published: DemoShow, tmp_path: Path) -> Path:
    path = tmp_path / "show.json"
    published.save(path)
    return path


def _problems(described: Path, root: Path, checks: list[tuple[str, dict[str, int]]]) -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(described), str(root), json.dumps(checks)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_live_mount_composes_the_newest_show(service_url: str, published: DemoShow, described: Path,
                                            tmp_path: Path) -> None:
    selection = published.selection()
    checks = [(pri, selection) for pri in selection]
    # an explicit version of the shot: its own layer is v2, its neighbours are the mount's
    checks.append((f"{LGT}@2", {**selection, LGT: 2}))
    # a label: approved moved to v3 after the history
    checks.append((f"{LGT}@approved", {**selection, LGT: 3}))
    with mounted(tmp_path, service_url) as mnt:
        assert sorted(p for p in os.listdir(mnt.path) if not p.startswith(".")) == sorted(selection)
        problems = _problems(described, mnt.path, checks)
    assert problems == {name: [] for name, _ in checks}


def test_pinned_mount_composes_the_show_of_that_day(service_url: str, published: DemoShow, described: Path,
                                                    tmp_path: Path) -> None:
    at = published.pins()["day3"]  # lighting v2 on the diamond; model without its hat
    selection = published.selection(at)
    assert selection != published.selection()
    checks = [(pri, selection) for pri in selection]
    with mounted(tmp_path, service_url, "--pin", format_time(at), name="day3") as mnt:
        assert sorted(p for p in os.listdir(mnt.path) if not p.startswith(".")) == sorted(selection)
        problems = _problems(described, mnt.path, checks)
    assert problems == {name: [] for name, _ in checks}
