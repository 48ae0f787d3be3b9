"""Zero-message opens: warm opens and listings never reach the daemon, and nothing goes stale.

The daemon answers OPEN and OPENDIR with ENOSYS once, the kernel then keeps
contents and listings itself (prodfs/kernel/_zeroopen.py). These tests hold the
daemon to what that requires: a version's files and directories are served
from the kernel once warm, the control files still give each open one fresh
and consistent document, a live root lists what is published, and
``--no-zero-open`` serves the same tree the old way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.fuse.test_namespace import PRI, compare_trees, make_tree
from tests.support.mount import Mount, mounted, prodfs, wait_for

OTHER = "spies:asset:walter-tex"


def _read_everything(root: Path) -> int:
    """Read every regular file; return how many have content (an empty one needs no READ)."""
    n = 0
    for top, dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(top, name)
            if not os.path.islink(p):
                with open(p, "rb") as f:
                    n += bool(f.read())
    return n


def _counters(m: Mount) -> dict:
    s = m.control("stats.json")
    return {k: s[k] for k in ("opens", "reads", "readdirs", "lookups")}


def test_warm_opens_and_listings_stay_in_the_kernel(tmp_path, pvc, pvc_url):
    src = make_tree(tmp_path / "src")
    pvc.publish(PRI, src)
    # (with passthrough, payloads' opens come to the library instead: tests/fuse/test_passthrough.py)
    with mounted(tmp_path, pvc_url, "--no-passthrough") as m:
        assert m.control("stats.json")["zero_open"] is True
        version = m / f"{PRI}@1"  # an explicit version: every name and attribute may be kept
        compare_trees(src, version)
        files = _read_everything(version)
        assert files >= 5
        cold = _counters(m)
        assert cold["opens"] == 0  # the daemon is never asked to open
        assert cold["reads"] >= files and cold["readdirs"] > 0
        for _ in range(3):
            compare_trees(src, version)
            assert _read_everything(version) == files
        warm = _counters(m)
        # walks, listings, opens and reads all answered by the kernel
        assert warm["reads"] == cold["reads"]
        assert warm["readdirs"] == cold["readdirs"]
        assert warm["opens"] == 0
        # and the same bytes through the versionless name
        compare_trees(src, m / PRI)
        assert "zero-message opens are off" not in prodfs("status", str(m.path)).stdout


def test_control_files_give_each_open_one_document(tmp_path, pvc, pvc_url):
    pvc.publish(PRI, make_tree(tmp_path / "src"))
    with mounted(tmp_path, pvc_url) as m:
        stats = m / ".prodfs" / "stats.json"
        with open(stats, "rb") as held:
            head = held.read(10)
            first_ino = os.fstat(held.fileno()).st_ino
            for _ in range(20):  # the mount's counters move on meanwhile
                os.listdir(m / PRI)
                os.stat(m / PRI / "walter.usda")
                later = json.loads(stats.read_bytes())
            doc = json.loads(head + held.read())  # the rest of the document opened first
        assert doc["lookups"] < later["lookups"]
        assert os.stat(stats).st_ino != first_ino  # every lookup: a new rendering
        for _ in range(200):
            json.loads(stats.read_bytes())
        # closed renderings are forgotten by the kernel and dropped by the daemon
        wait_for(lambda: m.control("stats.json")["control_snapshots"] < 20)
        assert m.control("conflicts.json")["conflicts"] == []
        assert sorted(os.listdir(m / ".prodfs")) == sorted(
            ["context.json", "resolved.json", "stats.json", "conflicts.json", "metrics.prom"])


def test_live_root_lists_new_products(tmp_path, pvc, pvc_url):
    pvc.publish(PRI, make_tree(tmp_path / "a"))
    with mounted(tmp_path, pvc_url, "--live-timeout", "0.5") as m:
        assert sorted(os.listdir(m.path)) == [".prodfs", PRI]
        assert sorted(os.listdir(m.path)) == [".prodfs", PRI]  # now from the kernel's copy
        pvc.publish(OTHER, make_tree(tmp_path / "b", tag="tex"))
        wait_for(lambda: OTHER in os.listdir(m.path), timeout=10)
        assert "tex" in (m / OTHER / "walter.usda").read_text()
        assert m.control("stats.json")["invalidations"] > 0


def test_without_zero_open_everything_goes_through_the_daemon(tmp_path, pvc, pvc_url):
    src = make_tree(tmp_path / "src")
    pvc.publish(PRI, src)
    with mounted(tmp_path, pvc_url, "--no-zero-open") as m:
        assert m.control("stats.json")["zero_open"] is False
        compare_trees(src, m / PRI)
        files = _read_everything(m / PRI)
        before = _counters(m)
        assert before["opens"] >= files
        assert _read_everything(m / PRI) == files
        compare_trees(src, m / PRI)
        after = _counters(m)
        assert after["opens"] >= before["opens"] + files
        assert after["readdirs"] > before["readdirs"]
        doc = m.control("context.json")
        assert doc["live"] is True
        assert "zero-message opens are off" in prodfs("status", str(m.path)).stdout
