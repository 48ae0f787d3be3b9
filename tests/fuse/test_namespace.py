"""The PRI namespace through a real mount: contents, names, live and pinned contexts."""

from __future__ import annotations

import errno
import mmap
import os
import random
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fuse.conftest import sha256
from tests.support.mount import mounted, wait_for

PRI = "spies:100:10-lgt:walter"
BIG = 101 * 1024 * 1024


def make_tree(root: Path, *, big: bool = False, tag: str = "v1") -> Path:
    root.mkdir(parents=True)
    (root / "walter.usda").write_text(f"#usda 1.0\n# {tag}\n")
    (root / "with space.txt").write_text("spaces are fine\n")
    (root / "ünïcødé ファイル.txt").write_text("unicode names\n")
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    deep = root / "nested" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_bytes(os.urandom(70_000))
    (root / "nested" / "empty-dir").mkdir()
    os.symlink("a/b/deep.txt", root / "nested" / "link")
    os.symlink("nested", root / "dirlink")
    if big:
        rnd = random.Random(7)
        with open(root / "big.bin", "wb") as f:
            block = rnd.randbytes(1 << 20)
            for i in range(BIG >> 20):
                f.write(block[i:] + block[:i])
    return root


def compare_trees(src: Path, dst: Path) -> int:
    """Walk both trees without following links; compare types, modes, sizes, targets, hashes."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        other = dst / rel
        assert sorted(os.listdir(other)) == sorted(dirnames + filenames), rel
        for name in dirnames + filenames:
            a, b = Path(dirpath, name), other / name
            sa, sb = a.lstat(), b.lstat()
            assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), a
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b)
            else:
                assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), a
            if stat.S_ISREG(sa.st_mode):
                assert sa.st_size == sb.st_size, a
                assert sha256(a) == sha256(b), a
            count += 1
    return count


def _drop_page_cache() -> None:
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as exc:
        pytest.skip(f"cannot drop the page cache: {exc}")


def _digests(pieces: list[bytes]) -> list[str]:
    import hashlib

    return [hashlib.sha256(p).hexdigest() for p in pieces]


def _read_slices(job: int, path: str, offsets: list[tuple[int, int]], out) -> None:  # noqa: ANN001 - a queue
    with open(path, "rb", buffering=0) as f:
        out.put((job, _digests([os.pread(f.fileno(), n, off) for off, n in offsets])))


@pytest.mark.parametrize("read_path", ["passthrough", "c", "python"])
def test_concurrent_cold_reads_are_exact(tmp_path, pvc, pvc_url, read_path):
    """Readers in several processes, page cache dropped, and every byte must
    still be where it belongs: through the C read path (its threads take the
    reads in any order), and through the daemon's Python handler, which serves
    some reads from the page cache on its event loop, into one shared buffer,
    and some from the disk in threads, interleaved."""
    import multiprocessing as mp

    rnd = random.Random(3)
    payloads = {f"part{i}.bin": rnd.randbytes((3 << 20) + i * 4097) for i in range(4)}
    src = tmp_path / "src"
    src.mkdir()
    for name, data in payloads.items():
        (src / name).write_bytes(data)
    pvc.publish(PRI, src)
    with mounted(tmp_path, pvc_url) as m:
        for name in payloads:  # fetched into the cache once
            assert (m / PRI / name).read_bytes() == payloads[name]
    args = {"python": ["--no-fast-path"], "c": ["--no-passthrough"], "passthrough": []}[read_path]
    with mounted(tmp_path, pvc_url, *args, name="again") as m:
        _drop_page_cache()
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        jobs = []
        for i, name in enumerate(sorted(payloads) * 2):
            size = len(payloads[name])
            if i % 2:  # sequential, in the kernel's large requests
                offsets = [(off, 1 << 20) for off in range(0, size, 1 << 20)]
            else:  # scattered, unaligned
                offsets = [(rnd.randrange(size), rnd.randrange(1, 200_000)) for _ in range(40)]
            jobs.append((name, offsets))
        procs = [ctx.Process(target=_read_slices, args=(i, str(m / PRI / name), offsets, out))
                 for i, (name, offsets) in enumerate(jobs)]
        for p in procs:
            p.start()
        results = dict(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0] * len(procs)
        for i, (name, offsets) in enumerate(jobs):
            assert results[i] == _digests([payloads[name][off:off + n] for off, n in offsets]), (name, i)
        s = m.control("stats.json")
        fast, through = s["fast_read"], s["passthrough"]
        if read_path == "python":
            assert fast is None and through is None
        elif read_path == "c" or not through["active"]:  # a kernel without passthrough: the C reads
            assert fast["reads"] > 0 and not fast["errors"]
        else:  # the kernel read the cache's files: no read reached the daemon
            assert through["opens"] + through["opens_by_daemon"] == len(jobs) and s["reads"] == 0
            assert through["releases"] == len(jobs) and not through["refused"]


def test_tree_reads_back_identical(tmp_path, pvc, pvc_url):
    src = make_tree(tmp_path / "src", big=True)
    v = pvc.publish(PRI, src, labels=["published"], message="first")
    assert v["number"] == 1
    with mounted(tmp_path, pvc_url) as m:
        assert PRI in os.listdir(m.path)
        for name in (PRI, f"{PRI}@1", f"{PRI}@published", f"{PRI}@latest"):
            assert compare_trees(src, m / name) >= 10
        # lstat fields: times are the version's, inode numbers are stable
        top = m / f"{PRI}@1"
        st1 = (top / "walter.usda").stat()
        created = v["created_at"]
        assert abs(st1.st_mtime - _epoch(created)) < 1
        assert (top / "walter.usda").stat().st_ino == st1.st_ino
        assert os.path.islink(top / "nested" / "link")
        assert (top / "nested" / "link").read_bytes() == (src / "nested/a/b/deep.txt").read_bytes()
        # random-offset reads and mmap of the big file
        rnd = random.Random(1)
        data = (src / "big.bin").read_bytes()
        with open(m / PRI / "big.bin", "rb") as f:
            for _ in range(50):
                off = rnd.randrange(0, BIG)
                n = rnd.randrange(1, 300_000)
                f.seek(off)
                assert f.read(n) == data[off:off + n]
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                assert len(mm) == BIG
                for _ in range(20):
                    off = rnd.randrange(0, BIG - 4096)
                    assert mm[off:off + 4096] == data[off:off + 4096]
        # POSIX tools
        for cmd in (["ls", "-la", str(m.path), str(top)], ["find", str(top), "-ls"], ["du", "-s", str(top)],
                    ["getfattr", "-d", str(top / "walter.usda")]):
            res = subprocess.run(cmd, capture_output=True, text=True)
            assert res.returncode == 0, (cmd, res.stderr)
        copy = tmp_path / "copy"
        subprocess.run(["cp", "-a", str(m / PRI), str(copy)], check=True)
        compare_trees(src, copy)
        with tarfile.open(tmp_path / "t.tar", "w") as tar:
            tar.add(m / f"{PRI}@1" / "nested", arcname="nested")
        with tarfile.open(tmp_path / "t.tar") as tar:
            assert "nested/a/b/deep.txt" in tar.getnames()
        vfs = os.statvfs(m.path)
        assert vfs.f_namemax == 255
        assert m.control("stats.json")["bytes_fetched"] >= BIG


def _epoch(iso: str) -> float:
    from pvc_client import parse_time

    return parse_time(iso).timestamp()


def test_live_mount_follows_publishes_open_files_keep_version(tmp_path, pvc, pvc_url):
    v1 = make_tree(tmp_path / "v1", tag="v1")
    v2 = make_tree(tmp_path / "v2", tag="v2")
    (v2 / "new-in-v2.txt").write_text("hello\n")
    pvc.publish(PRI, v1)
    with mounted(tmp_path, pvc_url, "--live-timeout", "0.5") as m:
        path = m / PRI / "walter.usda"
        assert "v1" in path.read_text()
        held = open(path, "rb")
        held_dir = os.open(m / PRI, os.O_RDONLY | os.O_DIRECTORY)
        try:
            pvc.publish(PRI, v2)
            wait_for(lambda: "v2" in path.read_text(), timeout=10)
            assert (m / PRI / "new-in-v2.txt").exists()
            assert held.read() == (v1 / "walter.usda").read_bytes()  # the open file kept its version
            assert "new-in-v2.txt" not in os.listdir(held_dir)  # so did the open directory
            assert "v1" in (m / f"{PRI}@1" / "walter.usda").read_text()
            assert os.getxattr(m / PRI, "user.prodfs.pri").decode() == f"{PRI}@2"
        finally:
            held.close()
            os.close(held_dir)
        resolved = {r["name"]: r for r in m.control("resolved.json")["resolved"]}
        assert resolved[PRI]["number"] == 2
        assert [h["ref"] for h in resolved[PRI]["history"]] == [f"{PRI}@1", f"{PRI}@2"]


def test_pinned_mount_never_shows_later_publishes(tmp_path, pvc, pvc_url):
    pvc.publish(PRI, make_tree(tmp_path / "a", tag="old"), at="-3d")
    pvc.publish(PRI, make_tree(tmp_path / "b", tag="mid"), at="-2d", labels=["published"])
    other = "spies:asset-late"
    with mounted(tmp_path, pvc_url, "--pin", "-60h") as m:
        assert "old" in (m / PRI / "walter.usda").read_text()
        assert sorted(os.listdir(m.path)) == [".prodfs", PRI]
        for name in (f"{PRI}@2", f"{PRI}@published"):
            assert not os.path.exists(m / name)
        pvc.publish(PRI, make_tree(tmp_path / "c", tag="new"))
        pvc.publish(other, make_tree(tmp_path / "d"))
        with mounted(tmp_path, pvc_url, name="live") as live:
            wait_for(lambda: "new" in (live / PRI / "walter.usda").read_text())
            assert os.path.isdir(live / other)
        assert "old" in (m / PRI / "walter.usda").read_text()
        assert not os.path.exists(m / other)
        assert not os.path.exists(m / f"{PRI}@3")
        assert m.control("context.json")["context"]["pin"]


def test_read_only_and_bad_names(tmp_path, pvc, pvc_url):
    pvc.publish(PRI, make_tree(tmp_path / "src"))
    with mounted(tmp_path, pvc_url) as m:
        f = m / PRI / "walter.usda"
        for action in (
            lambda: open(f, "r+b"),
            lambda: open(f, "ab"),
            lambda: open(m / PRI / "new.txt", "wb"),
            lambda: os.mkdir(m / "spies-new"),
            lambda: os.chmod(f, 0o600),
            lambda: os.rename(f, m / PRI / "x"),
            lambda: os.unlink(f),
            lambda: os.symlink("x", m / PRI / "l"),
            lambda: os.setxattr(f, "user.x", b"1"),
            lambda: os.truncate(f, 0),
        ):
            with pytest.raises(OSError) as exc:
                action()
            assert exc.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES), exc.value
        expect = {
            "not-a-product": errno.ENOENT,
            "noproduct": errno.ENOENT,
            "spies-missing": errno.ENOENT,
            f"{PRI}@999": errno.ENOENT,
            f"{PRI}@nolabel": errno.ENOENT,
            f"{PRI}@01": errno.EINVAL,
            f"{PRI}@0": errno.EINVAL,
            f"{PRI}@1.2.5": errno.EINVAL,
            f"{PRI}@Bad": errno.EINVAL,
            f"{PRI}@@1": errno.EINVAL,
            "a" * 300: errno.ENOENT,
            "s-" + "a" * 300 + "@1": errno.EINVAL,
            f"{PRI}/../{PRI}@7": errno.ENOENT,
            f"{PRI}/nested/../../nope-x": errno.ENOENT,
            ".prodfs/nope.json": errno.ENOENT,
        }
        for name, code in expect.items():
            with pytest.raises(OSError) as exc:
                os.stat(m / name)
            assert exc.value.errno == code, (name, exc.value)
        with pytest.raises(OSError) as exc:
            os.stat(os.fsencode(str(m.path)) + b"/spies-\xff\xfe")
        assert exc.value.errno in (errno.ENOENT, errno.EINVAL)
        assert (m / PRI / "walter.usda").read_text().startswith("#usda")  # still serving
        assert m.control("stats.json")["errors"] >= 1
    assert "spies:100:10-lgt:walter@01" in m.log_text()  # bad versions are logged


def test_control_files_and_xattrs(tmp_path, pvc, pvc_url):
    src = make_tree(tmp_path / "src")
    pvc.publish(PRI, src, labels=["published"])
    with mounted(tmp_path, pvc_url) as m:
        (m / PRI / "walter.usda").read_bytes()
        (m / f"{PRI}@published" / "walter.usda").read_bytes()
        ctx = m.control("context.json")
        assert {"context", "pvc", "mountpoint", "live", "products"} <= set(ctx)
        assert ctx["live"] is True and ctx["context"]["strategy"] == "latest"
        resolved = {r["name"]: r for r in m.control("resolved.json")["resolved"]}
        assert resolved[PRI]["ref"] == f"{PRI}@1"
        assert resolved[f"{PRI}@published"]["number"] == 1
        stats = m.control("stats.json")
        for key in ("lookups", "cache_hits", "cache_misses", "pvc_requests", "bytes_fetched", "errors", "pid", "uptime"):
            assert key in stats, key
        assert stats["lookups"] > 0 and stats["pvc_requests"] > 0
        assert stats["pid"] != os.getpid()
        top, f = m / PRI, m / PRI / "walter.usda"
        assert os.getxattr(top, "user.prodfs.pri") == f"{PRI}@1".encode()
        assert os.getxattr(top, "user.prodfs.resolved_by") == b"versionless"
        assert os.getxattr(m / f"{PRI}@1", "user.prodfs.resolved_by") == b"explicit"
        assert os.getxattr(m / f"{PRI}@published", "user.prodfs.resolved_by") == b"label"
        assert os.getxattr(f, "user.prodfs.version") == b"1"
        assert os.getxattr(f, "user.prodfs.sha256").decode() == sha256(src / "walter.usda")
        assert {"user.prodfs.pri", "user.prodfs.sha256"} <= set(os.listxattr(f))
        with pytest.raises(OSError) as exc:
            os.getxattr(f, "user.prodfs.nope")
        assert exc.value.errno == errno.ENODATA


def test_renamed_product_keeps_old_name(tmp_path, pvc, pvc_url):
    old, new = "spies:asset-walter", "spies:asset:walter-model"
    pvc.publish(old, make_tree(tmp_path / "src"))
    with mounted(tmp_path, pvc_url, "--live-timeout", "0.2") as m:
        assert (m / old / "walter.usda").exists()
        pvc.call("rename", old, new)
        wait_for(lambda: os.path.exists(m / new / "walter.usda"))
        assert (m / old / "walter.usda").read_text() == (m / new / "walter.usda").read_text()
        assert os.getxattr(m / old, "user.prodfs.pri") == f"{new}@1".encode()
        assert new in os.listdir(m.path) and old not in os.listdir(m.path)
    with mounted(tmp_path, pvc_url, name="fresh") as m2:
        assert (m2 / f"{old}@1" / "walter.usda").exists()


def test_mount_errors_are_one_line(tmp_path, pvc_url):
    from tests.support.mount import prodfs

    res = prodfs("mount", str(tmp_path / "missing"), "--pvc", pvc_url, check=False)
    assert res.returncode == 3 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "m").mkdir()
    res = prodfs("mount", str(tmp_path / "m"), "--pvc", "http://127.0.0.1:9", "--pvc-timeout", "2",
                 "--cache-dir", str(tmp_path / "c"), check=False)
    assert res.returncode == 4, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    res = prodfs("mount", str(tmp_path / "m"), "--pvc", pvc_url, "--pin", "yesterday-ish", check=False)
    assert res.returncode in (2, 4) and "Traceback" not in res.stderr
    assert not os.path.ismount(tmp_path / "m")
    shutil.rmtree(tmp_path / "c", ignore_errors=True)
