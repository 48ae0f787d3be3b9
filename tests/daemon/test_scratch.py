"""Scratch trees (the writable trees of workspace outputs) driven without a mount."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvc_client import Entry
from prodfs.storage.scratch import ROOT_ID, ScratchBusy, ScratchTree, tree_dir

T_NS = 1_700_000_000 * 10**9


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BASE = [
    Entry("geo", "dir", 0o755),
    Entry("geo/a.usd", "file", 0o644, 3, _sha(b"aaa")),
    Entry("geo/deep", "dir", 0o755),
    Entry("geo/deep/b.usd", "file", 0o600, 2, _sha(b"bb")),
    Entry("top.usd", "file", 0o644, 1, _sha(b"t")),
    Entry("link.usd", "symlink", 0o777, target="geo/a.usd"),
]


@pytest.fixture
def tree(tmp_path: Path) -> ScratchTree:
    t = ScratchTree(tmp_path / "t")
    t.start("s-lgt:walter", 3, BASE, T_NS)
    yield t
    t.close()


def paths(tree: ScratchTree) -> dict[str, tuple]:
    return {p: (i.type, i.sha256, i.target) for p, i in tree.walk()}


def test_start_copies_no_payload(tree: ScratchTree) -> None:
    assert sorted(paths(tree)) == sorted(e.path for e in BASE)
    assert list(tree.data.iterdir()) == []  # nothing copied
    a = tree.child(tree.child(ROOT_ID, "geo").id, "a.usd")
    assert a.sha256 == _sha(b"aaa") and not a.written
    assert tree.size_and_mtime(a) == (3, T_NS)
    assert tree.info()["base"] == 3 and tree.info()["pri"] == "s-lgt:walter"


def test_copy_up_then_write(tree: ScratchTree, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"aaa")
    a = tree.child(tree.child(ROOT_ID, "geo").id, "a.usd")
    tree.copy_up(a, blob)
    assert a.written and tree.get(a.id).written
    with open(tree.data_path(a.id), "r+b") as f:
        f.seek(3)
        f.write(b"AAA")
    assert tree.size_and_mtime(tree.get(a.id))[0] == 6
    # the blob itself is never written to
    assert blob.read_bytes() == b"aaa"


def test_atomic_save_over_a_base_file(tree: ScratchTree) -> None:
    item, fd = tree.create(ROOT_ID, ".top.usd.tmp", 0o644)
    os.write(fd, b"new")
    os.close(fd)
    replaced = tree.rename(ROOT_ID, ".top.usd.tmp", ROOT_ID, "top.usd")
    assert replaced is not None and replaced.sha256 == _sha(b"t")
    now = tree.child(ROOT_ID, "top.usd")
    assert now.id == item.id and now.written
    assert tree.child(ROOT_ID, ".top.usd.tmp") is None
    assert tree.data_path(now.id).read_bytes() == b"new"


def test_posix_refusals(tree: ScratchTree) -> None:
    geo = tree.child(ROOT_ID, "geo")
    with pytest.raises(OSError) as e:
        tree.mkdir(ROOT_ID, "geo", 0o755)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        tree.rmdir(ROOT_ID, "geo")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        tree.unlink(ROOT_ID, "geo")
    assert e.value.errno == errno.EISDIR
    with pytest.raises(OSError) as e:
        tree.rename(ROOT_ID, "geo", geo.id, "inside")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        tree.rename(ROOT_ID, "top.usd", ROOT_ID, "geo")
    assert e.value.errno == errno.EISDIR
    with pytest.raises(OSError) as e:
        tree.rename(ROOT_ID, "geo", ROOT_ID, "top.usd")
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        tree.rename(ROOT_ID, "top.usd", ROOT_ID, "link.usd", noreplace=True)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        tree.create(ROOT_ID, "a/b", 0o644)
    assert e.value.errno == errno.EINVAL
    assert sorted(paths(tree)) == sorted(e.path for e in BASE)  # nothing changed


def test_directory_rename_moves_its_subtree(tree: ScratchTree) -> None:
    tree.mkdir(ROOT_ID, "old", 0o755)
    tree.rename(ROOT_ID, "geo", tree.child(ROOT_ID, "old").id, "geo2")
    assert "old/geo2/deep/b.usd" in paths(tree)
    assert "geo/a.usd" not in paths(tree)


def test_a_second_opener_is_refused(tmp_path: Path, tree: ScratchTree) -> None:
    with pytest.raises(ScratchBusy):
        ScratchTree(tree.path)


def test_used_and_rebase_survive_a_reopen(tmp_path: Path) -> None:
    t = ScratchTree(tmp_path / "t")
    t.start("s-lgt:walter", None, [], T_NS)
    t.record_use("s-mdl:a", 1)
    t.record_use("s-mdl:a", 2)
    t.record_use("s-mdl:b", 5)
    t.rebase(7)
    t.close()
    t = ScratchTree(tmp_path / "t")
    assert t.used() == {"s-mdl:a": 2, "s-mdl:b": 5}
    assert t.info()["base"] == 7 and t.started
    t.close()


def test_sync_puts_every_answered_change_in_the_database_file(tree: ScratchTree) -> None:
    """What `sync` (fsync of a file of the tree) returns from is in tree.db itself, not only in its WAL."""
    item, fd = tree.create(ROOT_ID, "saved.usd", 0o644)
    os.close(fd)
    tree.rename(ROOT_ID, "top.usd", ROOT_ID, "moved.usd")

    def main_file_names() -> set[str]:
        # immutable=1 reads the database file alone, as a machine rebooted after a power loss
        # would find it had the WAL not reached the disk
        ro = sqlite3.connect(f"file:{tree.path / 'tree.db'}?immutable=1", uri=True)
        try:
            return {r[0] for r in ro.execute("SELECT name FROM items WHERE parent = ?", (ROOT_ID,))}
        except sqlite3.OperationalError:  # no table yet: everything is still in the WAL
            return set()
        finally:
            ro.close()

    assert "saved.usd" not in main_file_names()  # only in the WAL so far: the check can fail
    tree.sync()
    assert {"saved.usd", "moved.usd"} <= main_file_names() and "top.usd" not in main_file_names()


def test_tree_dir_is_one_directory_per_output(tmp_path: Path) -> None:
    a = tree_dir(tmp_path, "ws/../x", "spies:100:10-lgt:walter")
    assert a.parent.parent == tmp_path and "/" not in a.parent.name


_CRASHER = textwrap.dedent("""
    import os, sys
    from prodfs.storage.scratch import ROOT_ID, ScratchTree
    t = ScratchTree(__import__("pathlib").Path(sys.argv[1]))
    for i in range(1000000):
        item, fd = t.create(ROOT_ID, f".f{i}.tmp", 0o644)
        os.write(fd, str(i).encode())
        os.close(fd)
        t.rename(ROOT_ID, f".f{i}.tmp", ROOT_ID, "scene.usd")
        print(i, flush=True)
""")


def test_sigkill_loses_no_answered_operation(tmp_path: Path) -> None:
    """Killed between any two statements: the last save that returned is what the name holds."""
    t = ScratchTree(tmp_path / "t")
    t.start("s-lgt:walter", None, [], T_NS)
    t.close()
    proc = subprocess.Popen([sys.executable, "-c", _CRASHER, str(tmp_path / "t")], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    last = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        last = int(line)
        if last >= 200:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t = ScratchTree(tmp_path / "t")  # the lock went with the process
    scene = t.child(ROOT_ID, "scene.usd")
    held = int(t.data_path(scene.id).read_text())
    assert held >= last  # a save after the last one printed may have landed too, never an older one
    names = [p for p, _ in t.walk()]
    assert names.count("scene.usd") == 1
    assert {p.name for p in t.data.iterdir()} <= {str(i.id) for _, i in t.walk()}  # orphans swept
    t.close()


names = st.sampled_from(["a", "b", "c", "d"])
ops = st.lists(st.tuples(st.sampled_from(["create", "mkdir", "unlink", "rmdir", "rename"]), names, names), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_tree_behaves_like_a_directory(tmp_path_factory: pytest.TempPathFactory, script: list) -> None:
    """Random operations on one directory level: the tree and a real directory agree, errno included."""
    base = tmp_path_factory.mktemp("model")
    real = base / "real"
    real.mkdir()
    t = ScratchTree(base / "tree")
    t.start("s-x", None, [], T_NS)
    try:
        for op, a, b in script:
            got = want = None
            try:
                if op == "create":
                    fd = os.open(real / a, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    os.close(fd)
                elif op == "mkdir":
                    os.mkdir(real / a)
                elif op == "unlink":
                    os.unlink(real / a)
                elif op == "rmdir":
                    os.rmdir(real / a)
                else:
                    os.rename(real / a, real / b)
            except OSError as exc:
                want = exc.errno
            try:
                if op == "create":
                    os.close(t.create(ROOT_ID, a, 0o644)[1])
                elif op == "mkdir":
                    t.mkdir(ROOT_ID, a, 0o755)
                elif op == "unlink":
                    t.unlink(ROOT_ID, a)
                elif op == "rmdir":
                    t.rmdir(ROOT_ID, a)
                else:
                    t.rename(ROOT_ID, a, ROOT_ID, b)
            except OSError as exc:
                got = exc.errno
            assert got == want, (op, a, b)
            assert {p: i.type for p, i in t.walk()} == {
                p.name: "dir" if p.is_dir() else "file" for p in real.iterdir()}
    finally:
        t.close()


# -- the outputs of a mount, in-process ------------------------------------------------------


class _State:
    """What `Outputs` asks of a mount's state: names, and the version an output starts from."""

    class graph:  # noqa: N801 - stands for MountState.graph
        @staticmethod
        def canonical(name: str) -> str | None:
            return {"old-lgt:shot": "s-lgt:shot"}.get(name, name)

    def view(self, pri: str):
        raise LookupError(f"{pri}: no version")  # every output here is a new product


def _view(pri: str, number: int):
    from prodfs.mount.state import View
    return View(pri, pri, number, 1, 0, "versionless", "newest")


def test_outputs_record_the_newest_input_served_but_never_themselves(tmp_path: Path) -> None:
    import trio

    from prodfs.mount.outputs import Outputs

    async def main() -> None:
        outs = Outputs(tmp_path / "scratch", _State(), lambda view: [])  # type: ignore[arg-type]
        outs.set_workspace({"name": "ws", "revision": 3, "outputs": ["s-lgt:shot"]})
        assert outs.output_name("old-lgt:shot") is None  # an older name reads the version: no directory alias
        assert outs.output_name("s-lgt:shot@2") is None  # an explicit version is an input
        outs.served(_view("s-mdl:a", 1))  # before the output was opened: still an input of it
        out = await outs.open("s-lgt:shot")
        assert out is not None and out.tree.info()["base"] is None
        outs.served(_view("s-mdl:b", 4))
        outs.served(_view("s-mdl:a", 2))  # the name moved on: the newest served counts
        outs.served(_view("s-lgt:shot", 1))  # its own old version, read by @1
        assert outs.dependencies(out) == ["s-mdl:a@2", "s-mdl:b@4"]
        assert outs.origin() == {"name": "ws", "revision": 3}
        out.tree.close()
        outs2 = Outputs(tmp_path / "scratch", _State(), lambda view: [])  # type: ignore[arg-type]
        outs2.set_workspace({"name": "ws", "revision": 3, "outputs": ["s-lgt:shot"]})
        again = await outs2.open("s-lgt:shot")  # a remount: the record survived
        assert again is not None and outs2.dependencies(again) == ["s-mdl:a@2", "s-mdl:b@4"]
        busy = Outputs(tmp_path / "scratch", _State(), lambda view: [])  # type: ignore[arg-type]
        busy.set_workspace({"name": "ws", "revision": 3, "outputs": ["s-lgt:shot"]})
        assert await busy.open("s-lgt:shot") is None and "in use" in (busy.busy_reason("s-lgt:shot") or "")
        again.tree.close()

    trio.run(main)
