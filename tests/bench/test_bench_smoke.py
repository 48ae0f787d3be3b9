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
    # at the first miss, that manifest, and the snapshot's others in one request behind it (the
    # sample reads 2 products)
    assert empty["raw"]["blobs_fetched"] == 6 and empty["raw"]["manifests_fetched"] >= 2
    assert 1 <= empty["raw"]["manifest_requests"] <= 2, empty["raw"]
    # a product's files come in one pack, with its first open: a pack each, and the manifests'
    assert 3 <= empty["raw"]["pvc_requests"] <= 5, empty["raw"]
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


def test_tiny_scale_run_has_every_row(tmp_path: Path) -> None:
    """``python -m bench scale`` on a tiny store: every row of issue #17 measured, none failed."""
    from bench._scale_report import ROWS

    out, stores = tmp_path / "results", tmp_path / "stores"
    cmd = [sys.executable, "-m", "bench", "scale", "--products", "400", "--versions-per-product", "2",
           "--lookups", "20", "--publish-reps", "2", "--closure-products", "200", "--concurrency", "20",
           "--rounds", "1", "--store-dir", str(stores), "--workdir", str(tmp_path / "work"), "--out", str(out),
           "--name", "scale"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "scale.json").read_text())
    md = (out / "scale.md").read_text()

    rows = {r["id"]: r for r in doc["target_checks"]}
    assert [r["id"] for r in doc["target_checks"]] == [rid for rid, _, _ in ROWS]
    for rid, what, threshold in ROWS:
        assert f"| {what.replace('|', chr(92) + '|')} |" in md, rid
    store = doc["store"]
    assert not store["reused"] and store["key"] == "sqlite-400p-2v-2f-seed0" and store["build_seconds"] is not None
    assert doc["database_version"].startswith("SQLite ")
    assert len(doc["load_average_at_start"]) == 3

    steps = doc["steps"]
    # behaviour, not timing: each step ran and saw what it should
    for rid in ("live_mount_ready", "live_mount_rss", "first_lookup", "again_lookup", "publish_visible",
                "workspace_rss", "burst_product"):
        assert rows[rid]["figure"] != "not measured", rows[rid]
    # (how many products a mount loads at start is what the daemon decides: not checked)
    assert steps["live_mount"]["rss_bytes"] > 0
    assert steps["lookups"]["first"]["n"] == 20 and steps["lookups"]["first"]["errors"] == {}
    assert steps["lookups"]["again"]["n"] == 20
    reps = steps["publish"]["reps"]
    assert [r["after"] for r in reps] == [r["before"] + 1 for r in reps] == [3, 3]
    assert steps["publish"]["visible"] == 2, reps
    ws = steps["workspace"]
    assert ws["closure_products"] == ws["expected_closure"] >= 200 and ws["rss_bytes"] > 0
    assert rows["workspace_mount"]["met"] is not None  # the closure reached the size asked
    assert steps["burst_product"]["statuses"] == {"200": 20}
    closure = steps["burst_closure"]
    # the mount's first-lookup request: measured once the service takes depth and missing, refused before
    assert closure.get("statuses") == {"200": 20} or "does not take this request yet" in closure["error"], closure
    assert doc["daemon_log_problems"] == {"live": [], "workspace": []}
    assert doc["steps"]["index_request"]["bytes"] > 0
    with open("/proc/self/mounts") as f:
        assert str(tmp_path) not in f.read()

    # the same arguments find the store built; one that was not finished is built again
    from bench._scale_store import GeneratorArgs, ensure_store

    args = GeneratorArgs(400, 2)
    again = ensure_store(stores, "sqlite", args, lambda _: None, build_timeout=60)
    assert again.reused and again.record["built"] == store["built"]
    assert [sorted(r) for r in again.record["runs"]] == [["date", "published", "workspace"]]
    (again.path / "store.json").unlink()
    rebuilt = ensure_store(stores, "sqlite", args, lambda _: None, build_timeout=60)
    assert not rebuilt.reused and rebuilt.record["runs"] == [] and (rebuilt.data / "pvc.sqlite3").exists()


def test_scale_stores_stay_outside_the_repository() -> None:
    from bench._scale_store import check_outside_repository
    from bench._system import BenchError

    with pytest.raises(BenchError, match="inside the repository"):
        check_outside_repository(ROOT / "bench" / "stores")
    res = subprocess.run([sys.executable, "-m", "bench", "scale", "--store-dir", str(ROOT / "x")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--store-dir" in res.stderr  # a usage error, before anything is built
    assert not (ROOT / "x").exists()
