"""Workspaces, strategies, conflicts and snapshots through real mounts (the published diamond)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

from pvc_client import format_time, parse_time
from tests.support.helpers import on_a_terminal
from tests.support.mount import mounted, prodfs, wait_for

P1, P2, P3, P4 = "dia-p1", "dia-p2", "dia-p3", "dia-p4"


def _dir(tmp: Path, ref: str) -> Path:
    d = tmp / "src" / ref
    d.mkdir(parents=True)
    (d / "v.txt").write_text(ref + "\n")
    return d


@pytest.fixture
def diamond(tmp_path, pvc):
    """p2@2 -> p1@1, p3@2 -> p1@2, p4@1 -> p2@2 + p3@2; p1@3 published later (now)."""
    now = parse_time("now")

    def at(hours: float) -> str:
        return format_time(now.replace(microsecond=0) - __import__("datetime").timedelta(hours=hours))

    def pub(pri, n, hours, deps=(), labels=()):
        v = pvc.publish(pri, _dir(tmp_path, f"{pri}@{n}"), dependencies=list(deps), labels=list(labels), at=at(hours))
        assert v["number"] == n

    pub(P1, 1, 120, labels=["approved"])
    pub(P1, 2, 96)
    pub(P2, 1, 95)
    pub(P2, 2, 94, deps=[f"{P1}@1"])
    pub(P3, 1, 72)
    pub(P3, 2, 71, deps=[f"{P1}@2"])
    pub(P4, 1, 48, deps=[f"{P2}@2", f"{P3}@2"])
    pvc.publish(P1, _dir(tmp_path, f"{P1}@3"))
    return at


def v(m, name: str = P1) -> str:
    return (m / name / "v.txt").read_text().strip()


@pytest.mark.parametrize("strategy, expected", [
    ("latest", f"{P1}@3"), ("highest", f"{P1}@2"), ("lowest", f"{P1}@1"), ("nearest", f"{P1}@2"),
])
def test_strategies_resolve_the_diamond(tmp_path, pvc_url, diamond, strategy, expected):
    with mounted(tmp_path, pvc_url, "--root", P4, "--strategy", strategy) as m:
        assert v(m) == expected
        assert v(m, P4) == f"{P4}@1"
        assert (m / f"{P1}@1" / "v.txt").read_text().strip() == f"{P1}@1"  # explicit paths unaffected
        conflicts = m.control("conflicts.json")["conflicts"]
        mine = [c for c in conflicts if c["pri"] == P1]
        assert mine, conflicts
        asked = {(r["dependent"], r["number"]) for r in mine[0]["requests"]}
        assert asked == {(f"{P2}@2", 1), (f"{P3}@2", 2)}
        assert mine[0]["chosen"] == int(expected.rsplit("@", 1)[1])
        assert b"dia-p2@2" in os.getxattr(m / P1, "user.prodfs.conflict")
        out = prodfs("conflicts", str(m.path)).stdout
        assert P1 in out and f"{P2}@2" in out
        why = json.loads(prodfs("why", str(m / P1 / "v.txt"), "--json").stdout)
        assert why["ref"] == expected and why["pri"] == P1
        assert {r["dependent"] for r in why["requests"]} == {f"{P2}@2", f"{P3}@2"}
        assert why["rule"] == ("newest" if strategy == "latest" else f"strategy:{strategy}") or why["rule"].startswith("strategy:")
        text = prodfs("why", str(m / P1)).stdout
        assert expected in text and f"{P2}@2" in text


def test_strict_answers_eio_and_says_who(tmp_path, pvc_url, diamond):
    with mounted(tmp_path, pvc_url, "--root", P4, "--strategy", "strict",
                 allow_log=__import__("re").compile("unresolved conflict")) as m:
        with pytest.raises(OSError) as exc:
            os.stat(m / P1 / "v.txt")
        assert exc.value.errno == errno.EIO
        assert v(m, P2) == f"{P2}@2"
        assert (m / f"{P1}@2" / "v.txt").exists()
    log = m.log_text()
    assert f"{P2}@2" in log and f"{P3}@2" in log


def test_preference_override_and_diff(tmp_path, pvc_url, diamond):
    with mounted(tmp_path, pvc_url, "--prefer", "approved") as m:
        assert v(m) == f"{P1}@1"
        out = prodfs("diff", str(m.path), "--strategy", "highest").stdout
        assert "no product" in out
    with mounted(tmp_path, pvc_url, "--root", P4, "--strategy", "highest", "--override", f"{P1}@3", name="ov") as m:
        assert v(m) == f"{P1}@3"
        assert os.getxattr(m / P1, "user.prodfs.rule") == b"override"
        diff = json.loads(prodfs("diff", str(m.path), "--strategy", "lowest", "--json").stdout)
        assert diff["changes"] == []  # the override still wins
    with mounted(tmp_path, pvc_url, "--root", P4, "--strategy", "highest", name="hi") as m:
        diff = json.loads(prodfs("diff", str(m.path), "--strategy", "lowest", "--json").stdout)
        assert {"pri": P1, "from": 2, "to": 1} in diff["changes"]
        out = prodfs("diff", str(m.path), "--pin", "-100h").stdout
        assert f"{P4}: 1 -> -" in out


def test_workspace_mount_follows_changes_and_snapshots_do_not(tmp_path, pvc, pvc_url, pvc_service, diamond):
    pvc.call("put_workspace", "lgt", {"roots": [P4], "strategy": "latest", "pin": None, "prefer": [], "overrides": []})
    with mounted(tmp_path, pvc_url, "--workspace", "lgt", "--live-timeout", "0.5") as m:
        assert v(m) == f"{P1}@3"
        held = open(m / P1 / "v.txt")
        # move the pin back a day: new opens see the store as it was
        pvc.call("put_workspace", "lgt", {"roots": [P4], "strategy": "latest", "pin": diamond(24),
                                          "prefer": [], "overrides": []})
        wait_for(lambda: v(m) == f"{P1}@2", timeout=10)
        assert held.read().strip() == f"{P1}@3"
        held.close()
        pvc.call("put_workspace", "lgt", {"roots": [P4], "strategy": "lowest", "pin": diamond(24),
                                          "prefer": [], "overrides": []})
        wait_for(lambda: v(m) == f"{P1}@1", timeout=10)
        assert m.control("context.json")["context"]["strategy"] == "lowest"
        snap = prodfs("snapshot", str(m.path)).stdout.strip()
        assert snap and snap == prodfs("snapshot", str(m.path)).stdout.strip()  # content-derived
        import subprocess

        res = subprocess.run([sys.executable, "-m", "pvc_client.cli", "snapshot", "create", "--workspace", "lgt",
                              "--url", pvc_url], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().splitlines()[-1] == snap  # same resolution, same id
        record = pvc.call("get_snapshot", snap)["record"]
        assert record["choices"][P1] == 1 and record["choices"][P4] == 1
        assert record["context"]["pin"] and record["context"]["strategy"] == "lowest"
    cache = tmp_path / "render-cache"
    with mounted(tmp_path, pvc_url, "--snapshot", snap, name="render", cache=cache) as r:
        assert v(r) == f"{P1}@1"
        pvc.publish(P1, _dir(tmp_path, f"{P1}@4"))
        pvc.call("put_workspace", "lgt", {"roots": [P4], "strategy": "latest", "pin": None,
                                          "prefer": [], "overrides": []})
        report = json.loads(prodfs("prefetch", str(r.path), "--json").stdout)
        assert report["snapshot"] == snap and report["files"] >= 4
        # the mount's first miss brought the snapshot's manifests along, into the cache they share
        assert report["manifest_requests"] == 0, report
        # on a terminal, a progress bar: files, bytes, rate, time left
        code, shown = on_a_terminal([sys.executable, "-m", "mount_tools.cli", "prefetch", "--snapshot", snap,
                                     "--pvc", pvc_url, "--cache-dir", str(tmp_path / "other-cache")],
                                    {**os.environ, "COLUMNS": "160"})
        assert code == 0 and f"prefetch {snap}" in shown and f"{report['blobs']}/{report['blobs']} files" in shown, shown
        # into an empty cache: every manifest of the snapshot in one request
        empty = json.loads(prodfs("prefetch", "--snapshot", snap, "--pvc", pvc_url, "--cache-dir",
                                  str(tmp_path / "third-cache"), "--json").stdout)
        assert empty["versions"] == report["versions"] >= 4 and empty["manifest_requests"] == 1, empty
        assert v(r) == f"{P1}@1"
        assert not os.path.exists(r / f"{P1}@4")
        requests_before = r.control("stats.json")["pvc_requests"]
        pvc_service.stop()
        try:
            for name in (P1, P2, P3, P4):
                assert (r / name / "v.txt").read_text().strip().startswith(name)
            stats = r.control("stats.json")
            assert stats["pvc_requests"] == requests_before
            # what the prefetch (another process) hashed into the cache is trusted, not hashed again
            assert stats["blobs_hashed"] == 0
        finally:
            pvc_service.start()
