"""Running ProdFS like system software: mount(8), systemd units, dead mounts, status."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuse.test_namespace import PRI, make_tree
from tests.support.mount import mounted, prodfs, wait_for, wait_gone

REPO = Path(__file__).resolve().parents[2]


def _helper_installed() -> bool:
    helper = shutil.which("mount.fuse.prodfs", path="/sbin:/usr/sbin:/usr/local/sbin")
    return helper is not None


def test_mount_command_and_umount(tmp_path, pvc, pvc_url):
    """``mount -t fuse.prodfs`` through the real mount(8), and ``umount``."""
    if os.getuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8)")
    if not _helper_installed():
        pytest.fail("mount.fuse.prodfs is not where mount(8) looks: scripts/setup.sh installs it")
    pvc.publish(PRI, make_tree(tmp_path / "src"))
    mnt = tmp_path / "p"
    mnt.mkdir()
    opts = f"pvc={pvc_url},cache_dir={tmp_path / 'cache'},log_file={tmp_path / 'm.log'},live_timeout=0.5,_netdev"
    res = subprocess.run(["mount", "-t", "fuse.prodfs", "live", str(mnt), "-o", opts],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    try:
        assert (mnt / PRI / "walter.usda").read_text().startswith("#usda")
        ctx = json.loads((mnt / ".prodfs" / "context.json").read_text())
        assert ctx["pvc"] == pvc_url and ctx["live"] is True
        with open("/proc/self/mountinfo") as f:
            assert any(str(mnt) in line and "fuse.prodfs" in line for line in f)
        pid = json.loads((mnt / ".prodfs" / "stats.json").read_text())["pid"]
    finally:
        res = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not os.path.ismount(mnt)
    wait_gone(pid)


def test_mount_helper_translates_sources(tmp_path):
    from mount_tools.mount_helper import translate

    assert translate(["spies-lgt", "/p", "-o", "pvc=http://x:1,cache_dir=/c"]) == [
        "mount", "/p", "--workspace", "spies-lgt", "-o", "pvc=http://x:1,cache_dir=/c"]
    assert translate(["snapshot:abc123", "/p"]) == ["mount", "/p", "--snapshot", "abc123"]
    assert translate(["live", "/p", "-orw,pin=2019-01-24"]) == ["mount", "/p", "-o", "rw,pin=2019-01-24"]


def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian's systemd package)")
    # The units name the install location /opt/prodfs; point them at this checkout.
    venv_bin = Path(sys.executable).parent
    units = tmp_path / "units"
    units.mkdir()
    for unit in sorted((REPO / "systemd").iterdir()):
        text = unit.read_text().replace("/opt/prodfs/.venv/bin", str(venv_bin)).replace("/opt/prodfs", str(REPO))
        (units / unit.name).write_text(text)
    names = sorted(p.name for p in units.iterdir())
    assert {"pvc.service", "prodfs@.service", "p.mount", "p.automount", "prodfs-fsck.service",
            "prodfs-fsck.timer"} <= set(names)
    for name in names:
        target = units / (name.replace("@.", "@spies.") if "@." in name else name)
        if target.name != name:
            shutil.copy(units / name, target)
        res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(target)],
                             capture_output=True, text=True, cwd=units)
        problems = [line for line in (res.stderr + res.stdout).splitlines()
                    if str(units) in line or target.name in line]
        assert res.returncode == 0 and not problems, (name, res.stderr)


def test_sigkill_leaves_no_trap(tmp_path, pvc, pvc_url):
    """A daemon killed with SIGKILL: readers get an error, the next mount recovers."""
    src = make_tree(tmp_path / "src")
    pvc.publish(PRI, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = tmp_path / "cache"
    prodfs("mount", str(mnt), "--pvc", pvc_url, "--cache-dir", str(cache), "--log-file", str(tmp_path / "a.log"))
    assert (mnt / PRI / "walter.usda").exists()
    pid = json.loads((mnt / ".prodfs" / "stats.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    with pytest.raises(OSError):
        os.stat(mnt / PRI)
    status = json.loads(prodfs("status", str(mnt), "--json").stdout)
    assert status["mounts"][0]["health"] == "dead"
    with mounted(tmp_path, pvc_url, name="mnt", cache=cache) as m:
        assert (m / PRI / "walter.usda").read_bytes() == (src / "walter.usda").read_bytes()
    assert not list((cache / "tmp").iterdir())


def test_status_and_stats_fields(tmp_path, pvc, pvc_url):
    pvc.publish(PRI, make_tree(tmp_path / "src"))
    with mounted(tmp_path, pvc_url) as m:
        (m / PRI / "walter.usda").read_bytes()
        doc = json.loads(prodfs("status", "--json").stdout)
        mine = [e for e in doc["mounts"] if e["mountpoint"] == str(m.path)]
        assert mine and mine[0]["health"] == "ok"
        stats = mine[0]["stats"]
        for key in ("pid", "uptime", "cache", "cache_hit_ratio", "pvc_requests", "pvc_latency_avg_ms",
                    "resolutions", "conflicts", "errors", "lookups", "bytes_fetched", "degraded"):
            assert key in stats, key
        assert stats["cache"]["bytes"] > 0
        prom = (m / ".prodfs" / "metrics.prom").read_text()
        assert f'prodfs_lookups_total{{mountpoint="{m.path}"}}' in prom and "prodfs_cache_bytes" in prom
        text = prodfs("status", str(m.path)).stdout
        assert str(m.path) in text and "ok" in text
    res = prodfs("status", str(tmp_path / "mnt"), check=False)
    assert res.returncode == 5


def test_sigterm_unmounts(tmp_path, pvc, pvc_url):
    pvc.publish(PRI, make_tree(tmp_path / "src"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    prodfs("mount", str(mnt), "--pvc", pvc_url, "--cache-dir", str(tmp_path / "c"), "--log-file", str(tmp_path / "l"))
    pid = json.loads((mnt / ".prodfs" / "stats.json").read_text())["pid"]
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    wait_for(lambda: not os.path.ismount(mnt))
    assert "unmounted" in (tmp_path / "l").read_text()


def test_systemd_notify_ready_and_stopping(tmp_path, pvc, pvc_url):
    """Under systemd (Type=notify) the daemon says READY=1 once it serves, STOPPING=1 on SIGTERM."""
    import socket

    pvc.publish(PRI, make_tree(tmp_path / "src"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    proc = subprocess.Popen([sys.executable, "-m", "mount_tools.cli", "mount", str(mnt), "--foreground",
                             "--pvc", pvc_url, "--cache-dir", str(tmp_path / "c")],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg
        assert (mnt / PRI / "walter.usda").exists()  # serving when it said so
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode()
        assert proc.wait(30) == 0
        assert not os.path.ismount(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        sock.close()
    assert "Traceback" not in proc.stderr.read()
