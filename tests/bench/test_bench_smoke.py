"""A tiny-scale run of the benchmark harness: the whole pipeline, no timing asserted.

``python -m bench run`` with a few files, one repetition, a small resolver
graph and a small memory store must mount every target, measure every one,
and write a complete JSON and markdown result. Figures are not checked (they
are timings); what is checked is that every measurement has a sample for
every target, that no sample failed, and the counts that are behaviour: a
snapshot mount with a prefetched cache makes no PVC request, an empty cache
fetches what it opens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench._measure import MEASURES

pytestmark = pytest.mark.fuse

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("bindfs", "squashfuse", "mksquashfs", "fusermount3")


@pytest.fixture(autouse=True)
def _need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing or not os.path.exists("/dev/fuse"):
        why = f"benchmark peers or FUSE missing: {', '.join(missing) or '/dev/fuse'} (scripts/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def test_tiny_run_writes_a_complete_result(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench", "run", "--products", "2", "--files", "3", "--big-files", "1",
           "--big-mib", "1", "--reps", "1", "--mode", "snapshot", "--mode", "empty", "--no-drop-caches",
           "--resolver-products", "200", "--memory-files", "100", "--memory-files", "200",
           "--memory-per-product", "50", "--workdir", str(tmp_path / "work"), "--out", str(out), "--name", "smoke"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "smoke.json").read_text())
    md = (out / "smoke.md").read_text()

    names = [t["name"] for t in doc["targets"]]
    assert names == ["native", "bindfs", "squashfuse", "prodfs-snapshot", "prodfs-empty"]
    assert doc["errors"] == [], doc["errors"]
    assert doc["daemon_log_problems"] == {}
    # every measurement ran (the demo show is in the tree, usd-core is a test dependency), once per target
    figures = {fig for m in MEASURES for fig in m.keys}
    assert set(doc["measurements"]) == figures
    assert doc["skipped"] == {}
    warm = {fig for m in MEASURES if m.prepare == "warm" for fig in m.keys}
    for fig, meas in doc["measurements"].items():
        # an emptied cache is measured cold only (warm, it is the live mode)
        measured = [n for n in names if not (fig in warm and n == "prodfs-empty")]
        assert sorted(meas["results"]) == sorted(measured), fig
        for name in measured:
            r = meas["results"][name]
            assert r["n"] == 1 and r["median"] > 0, (fig, name, r)
        assert set(meas["ratios"]) == {n for n in measured if n.startswith("prodfs-")}
        assert meas["ratios"]["prodfs-snapshot"]["best_c"] in ("bindfs", "squashfuse")

    # behaviour, not timing: the snapshot serves from its prefetched cache, the empty cache fetches
    snap, empty = doc["pvc_requests"]["prodfs-snapshot"], doc["pvc_requests"]["prodfs-empty"]
    # (each file reaches the daemon or its library once at least: its open with passthrough,
    # its first read without, the kernel answering warm opens itself)
    assert snap["raw"]["pvc_requests"] == 0 and snap["raw"]["opens"] + snap["raw"]["reads"] >= 6
    assert empty["raw"]["blobs_fetched"] == 6 and empty["raw"]["manifests_fetched"] == 2
    # a product's files come in one pack, with its first open: a manifest and a pack each
    assert 4 <= empty["raw"]["pvc_requests"] <= 5, empty["raw"]
    # publish and prefetch of the tree, beside tar, once each
    transfers = doc["transfers"]
    assert transfers["files"] >= 7 and all(len(s) == 1 for s in transfers["seconds"].values()), transfers
    assert "## Whole-tree transfers" in md

    assert [r["products"] for r in doc["resolver"]["rows"]] == [200]
    steps = doc["memory"]["steps"]
    assert [s["files"] for s in steps] == [100, 200] and all(s["rss"] > 0 for s in steps)

    # one verdict per target of the issue, each with its figure
    checks = doc["target_checks"]
    kinds = {c["target"].split(" (")[0].split(",")[0] for c in checks}
    assert {"warm metadata walk", "warm open+read of small files", "warm sequential read",
            "cold sequential read", "versionless lookup", "resolver", "open+read of 1", "publish of the whole tree",
            "prefetch of the whole tree"} <= kinds, kinds
    assert all(c["met"] in (True, False) for c in checks if "not measured" not in c["figure"])
    assert "## Targets" in md and "## Absolute figures" in md and "| prodfs-snapshot |" in md
    # nothing left mounted under the work directory
    with open("/proc/self/mounts") as f:
        assert str(tmp_path) not in f.read()
