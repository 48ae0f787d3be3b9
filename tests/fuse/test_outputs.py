"""Workspace outputs through real mounts: writable trees, real tools, publish of what was read, crashes.

One service and one workspace mount for the module (tests that need their own
mount or workspace make it). The workspace ``artist`` has inputs ``out-mdl:a``
(read) and ``out-mdl:b`` (a root, never read), and two outputs: ``out-lgt:shot``
(published before: its tree starts from version 1) and ``out-lgt:new`` (no
version yet: its tree starts empty).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support.helpers import Publisher, file_tree
from tests.support.mount import Mount, mounted, prodfs, wait_for
from tests.support.service import running_service

A, B, SHOT, NEW = "out-mdl:a", "out-mdl:b", "out-lgt:shot", "out-lgt:new"
WS = "artist"


class Env:
    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp, self.url = tmp, url
        self.pub = Publisher(url)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    with running_service(tmp / "pvc-data") as service:
        e = Env(tmp, service.url)
        e.service = service
        pub = e.pub
        pub.publish(A, file_tree(tmp / "src-a1", {"a.txt": b"a1\n"}))
        pub.publish(A, file_tree(tmp / "src-a2", {"a.txt": b"a2\n"}))
        pub.publish(B, file_tree(tmp / "src-b1", {"b.txt": b"b1\n"}))
        pub.publish(SHOT, file_tree(tmp / "src-shot", {
            "shot.usda": b"#usda 1.0\n(\n    doc = \"v1\"\n)\n",
            "geo/big.bin": os.urandom(300_000),
            "geo/small.txt": b"small\n",
        }), dependencies=[f"{A}@1"])
        pub.call("put_workspace", WS, {"roots": [A, B], "outputs": [SHOT, NEW]})
        yield e


@pytest.fixture(scope="module")
def m(env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs-mount")
    with mounted(tmp, env.url, "--workspace", WS, "--scratch", str(tmp / "scratch"), *os.environ.get("XARGS", "").split()) as mount:
        mount.scratch = tmp / "scratch"
        yield mount


def _errno(fn) -> int | None:
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return None


def test_outputs_are_listed_and_start_from_their_version(m: Mount):
    names = os.listdir(m.path)
    assert SHOT in names and NEW in names and A in names
    assert sorted(os.listdir(m / SHOT)) == ["geo", "shot.usda"]
    assert b'"v1"' in (m / SHOT / "shot.usda").read_bytes()
    assert os.listdir(m / NEW) == []
    assert os.getxattr(m / SHOT, "user.prodfs.output") == SHOT.encode()
    assert os.getxattr(m / SHOT, "user.prodfs.base") == b"1"
    # nothing was copied to start the tree
    data = list((m.scratch).rglob("data/*"))
    assert data == [], data


def test_everything_else_stays_read_only(m: Mount):
    assert _errno(lambda: (m / A / "x").write_text("x")) == errno.EROFS
    assert _errno(lambda: (m / A / "a.txt").write_text("x")) == errno.EROFS
    assert _errno(lambda: os.mkdir(m / "newdir")) == errno.EROFS
    assert _errno(lambda: (m / f"{SHOT}@1" / "shot.usda").write_text("x")) == errno.EROFS
    assert _errno(lambda: os.rename(m / SHOT / "shot.usda", m / A / "s")) in (errno.EXDEV, errno.EROFS)
    assert _errno(lambda: os.unlink(m / A / "a.txt")) == errno.EROFS
    assert (m / A / "a.txt").read_text() == "a2\n"


def test_posix_operations_a_dcc_uses(m: Mount):
    d = m / NEW / "work"
    os.mkdir(d)
    f = d / "scene.ma"
    with open(f, "w") as fh:
        fh.write("hello")
        fh.flush()
        os.fsync(fh.fileno())
    assert f.read_text() == "hello"
    with open(f, "r+") as fh:  # truncate, then write past the end
        fh.truncate(2)
        fh.seek(4)
        fh.write("X")
    assert f.read_bytes() == b"he\0\0X"
    with open(f, "a") as fh:
        fh.write("!")
    assert f.read_bytes() == b"he\0\0X!"
    # atomic save: write a temporary file, rename it over the scene
    tmp = d / ".scene.ma.tmp"
    tmp.write_text("saved")
    reader = open(f)  # an open file keeps its bytes after the name moves on
    os.replace(tmp, f)
    assert f.read_text() == "saved" and not tmp.exists()
    assert reader.read() == "he\0\0X!"
    reader.close()
    os.chmod(f, 0o600)
    assert (os.stat(f).st_mode & 0o777) == 0o600
    os.utime(f, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    assert os.stat(f).st_mtime_ns == 1_600_000_000 * 10**9
    os.symlink("scene.ma", d / "current.ma")
    assert os.readlink(d / "current.ma") == "scene.ma" and (d / "current.ma").read_text() == "saved"
    assert _errno(lambda: os.link(f, d / "hard")) == errno.EPERM
    assert _errno(lambda: os.rmdir(d)) == errno.ENOTEMPTY
    os.unlink(d / "current.ma")
    os.mkdir(d / "sub")
    os.rmdir(d / "sub")
    assert sorted(os.listdir(d)) == ["scene.ma"]
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    shutil.rmtree(m / NEW / "work")
    assert os.listdir(m / NEW) == []


def test_a_large_directory_lists_whole(m: Mount):
    d = m / NEW / "many"
    os.mkdir(d)
    names = {f"frame.{i:04d}.exr" for i in range(1500)}
    for n in names:
        os.close(os.open(d / n, os.O_CREAT | os.O_WRONLY, 0o644))
    assert set(os.listdir(d)) == names  # listed in many parts: each entry once
    os.unlink(d / "frame.0000.exr")
    assert set(os.listdir(d)) == names - {"frame.0000.exr"}
    shutil.rmtree(d)


def test_copy_on_write_of_a_base_file(m: Mount):
    big = m / SHOT / "geo" / "big.bin"
    before = big.read_bytes()
    with open(big, "r+b") as fh:
        fh.seek(10)
        fh.write(b"CHANGED")
    after = big.read_bytes()
    assert after[:10] == before[:10] and after[10:17] == b"CHANGED" and after[17:] == before[17:]
    # only the file written was copied; the explicit version is unchanged
    assert (m / f"{SHOT}@1" / "geo" / "big.bin").read_bytes() == before
    assert len(list(m.scratch.rglob("data/*"))) == 1


def test_real_tools_write_into_an_output(m: Mount, env, tmp_path: Path):
    src = file_tree(tmp_path / "src", {"a/one.txt": b"1" * 5000, "a/b/two.txt": b"2", "three.bin": os.urandom(70_000)})
    os.symlink("a/one.txt", src / "link")
    os.chmod(src / "a" / "b" / "two.txt", 0o640)
    dst = m / NEW / "tools"
    os.mkdir(dst)
    subprocess.run(["cp", "-a", str(src), str(dst / "cp")], check=True)
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.add(src, arcname="tar")
    subprocess.run(["tar", "-C", str(dst), "-xf", str(tmp_path / "t.tar")], check=True)
    if shutil.which("rsync"):
        subprocess.run(["rsync", "-a", f"{src}/", str(dst / "rsync")], check=True)
        subprocess.run(["rsync", "-a", "--delete", f"{src}/", str(dst / "rsync")], check=True)  # a second pass: no-op
    for copy in ["cp", "tar"] + (["rsync"] if shutil.which("rsync") else []):
        for rel in ["a/one.txt", "a/b/two.txt", "three.bin"]:
            assert (dst / copy / rel).read_bytes() == (src / rel).read_bytes(), (copy, rel)
        assert os.readlink(dst / copy / "link") == "a/one.txt"
        assert (os.stat(dst / copy / "a/b/two.txt").st_mode & 0o777) == 0o640
        if copy != "tar":
            assert os.stat(dst / copy / "three.bin").st_mtime_ns // 10**9 == os.stat(src / "three.bin").st_mtime_ns // 10**9
    shutil.rmtree(dst)


def test_usd_saves_a_layer_in_place(m: Mount):
    pxr = pytest.importorskip("pxr")
    from pxr import Sdf, Usd

    path = str(m / SHOT / "shot.usda")
    layer = Sdf.Layer.FindOrOpen(path)
    assert layer is not None and layer.documentation == "v1"
    stage = Usd.Stage.Open(layer)
    stage.DefinePrim("/World/Light", "SphereLight")
    layer.documentation = "v2 from the workspace"
    assert layer.Save()
    del stage, layer
    reopened = Sdf.Layer.OpenAsAnonymous(path)
    assert reopened.documentation == "v2 from the workspace"
    assert reopened.GetPrimAtPath("/World/Light") is not None
    assert pxr is not None


def test_publish_records_what_was_read(m: Mount, env):
    assert (m / A / "a.txt").read_text() == "a2\n"  # read: an input. B is a root but never read.
    dry = json.loads(prodfs("publish", str(m / SHOT), "--dry-run", "--json").stdout)
    assert dry["dry_run"] and f"{A}@2" in dry["dependencies"]
    assert not any(d.startswith(B + "@") for d in dry["dependencies"])
    res = prodfs("publish", str(m / SHOT), "-m", "lit", "--label", "review", "--json")
    doc = json.loads(res.stdout)
    number = doc["number"]
    assert number == 2 and doc["base"] == 1
    version = env.pub.call("get_version", SHOT, number)
    assert version["dependencies"] == [f"{A}@2"]  # what was read: not B, a root never read
    assert version["message"] == "lit"
    ws = env.pub.call("get_workspace", WS)
    assert version["workspace"] == {"name": WS, "revision": ws["revision"]}
    assert env.pub.call("labels", SHOT)["review"] == number
    # the published content is the tree's, byte for byte
    assert (m / f"{SHOT}@{number}" / "shot.usda").read_bytes() == (m / SHOT / "shot.usda").read_bytes()
    assert (m / f"{SHOT}@{number}" / "geo" / "big.bin").read_bytes()[10:17] == b"CHANGED"
    # the output starts again from the new version, its tree as it was
    assert os.getxattr(m / SHOT, "user.prodfs.base") == str(number).encode()
    assert f"output {SHOT} (from version {number})" in prodfs("status", str(m.path)).stdout
    assert b"v2 from the workspace" in (m / SHOT / "shot.usda").read_bytes()


def test_a_refused_publish_keeps_thefile_tree(m: Mount):
    (m / NEW / "keep.txt").write_text("keep")
    res = prodfs("publish", str(m / NEW), "--label", "latest", check=False)
    assert res.returncode == 8, res.stderr
    assert "latest" in res.stderr and "kept" in res.stderr
    assert (m / NEW / "keep.txt").read_text() == "keep"
    res = prodfs("publish", str(m / A), check=False)
    assert res.returncode == 8 and "not an output" in res.stderr
    res = prodfs("publish", str(m / NEW / "keep.txt"), check=False)
    assert res.returncode == 2


def test_publish_with_the_service_down_keeps_thefile_tree(env, tmp_path: Path):
    from tests.support.faultproxy import FaultProxy

    with FaultProxy(env.service.port) as proxy:
        with mounted(tmp_path, proxy.url, "--workspace", WS, "--scratch", str(tmp_path / "scratch"),
                     "--pvc-timeout", "2", allow_log=__import__("re").compile("refused|degraded")) as mm:
            (mm / NEW / "scene.ma").write_text("work")
            proxy.refuse()
            res = prodfs("publish", str(mm / NEW), check=False)
            assert res.returncode == 8, res.stderr
            assert (mm / NEW / "scene.ma").read_text() == "work"
            proxy.passthrough()
            res = prodfs("publish", str(mm / NEW), "--json")
            number = json.loads(res.stdout)["number"]
            assert env.pub.call("get_version", NEW, number)["number"] == number


def test_a_killed_daemon_loses_no_write(env, tmp_path: Path):
    scratch = tmp_path / "scratch"
    args = ("--workspace", WS, "--scratch", str(scratch))
    with mounted(tmp_path, env.url, *args) as mm:  # its umount clears the dead mount the kill leaves
        with open(mm / NEW / "after-fsync.txt", "w") as fh:
            fh.write("durable")
            fh.flush()
            os.fsync(fh.fileno())
        (mm / NEW / "answered.txt").write_text("answered")
        os.replace(mm / NEW / "answered.txt", mm / NEW / "renamed.txt")
        os.kill(mm.pid(), signal.SIGKILL)
        wait_for(lambda: _errno(lambda: os.stat(mm.path)) == errno.ENOTCONN)
    with mounted(tmp_path, env.url, *args) as again:
        assert (again / NEW / "after-fsync.txt").read_text() == "durable"
        assert (again / NEW / "renamed.txt").read_text() == "answered"
        assert not (again / NEW / "answered.txt").exists()


def test_a_second_mount_of_the_workspace_reads_the_output(m: Mount, env, tmp_path: Path):
    with mounted(tmp_path, env.url, "--workspace", WS, "--scratch", str(m.scratch)) as other:
        assert _errno(lambda: (other / SHOT / "x.txt").write_text("x")) == errno.EROFS
        assert (other / SHOT / "shot.usda").exists()  # the published version, read as an input
        assert "another mount" in other.log_text()


def test_other_workspaces_see_who_declared_an_output(env):
    env.pub.call("put_workspace", "other", {"roots": [SHOT]})
    found = env.pub.call("declared_outputs", SHOT)
    assert [w["name"] for w in found["workspaces"]] == [WS]
    out = subprocess.run([sys.executable, "-m", "pvc_client.cli", "outputs", SHOT, "--url", env.url],
                         capture_output=True, text=True)
    assert out.returncode == 0 and WS in out.stdout, out.stderr


def test_a_tree_a_version_cannot_hold_is_refused_with_its_path(m: Mount):
    os.symlink("/etc/passwd", m / NEW / "outside")
    res = prodfs("publish", str(m / NEW), check=False)
    assert res.returncode == 8 and "outside" in res.stderr, res.stderr
    assert os.readlink(m / NEW / "outside") == "/etc/passwd"  # kept: fix it, publish again
    os.unlink(m / NEW / "outside")


def test_outputs_follow_the_workspace(m: Mount, env):
    third = "out-lgt:third"
    ws = env.pub.call("get_workspace", WS)
    env.pub.call("put_workspace", WS, {**_spec(ws), "outputs": [*ws["outputs"], third]})
    wait_for(lambda: _errno(lambda: os.mkdir(m / third / "made")) is None, timeout=10)
    assert third in os.listdir(m.path)
    env.pub.call("put_workspace", WS, _spec(ws))
    wait_for(lambda: not (m / third).exists(), timeout=10)  # no version: nothing to read
    assert _errno(lambda: os.mkdir(m / third)) == errno.EROFS


def _spec(ws: dict) -> dict:
    return {k: ws[k] for k in ("roots", "strategy", "pin", "prefer", "overrides", "outputs")}
