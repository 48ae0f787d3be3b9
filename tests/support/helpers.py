"""Shared by the FUSE, fault, load and fuzz suites: FUSE checks, publishing, trees, timing a call."""

from __future__ import annotations

import errno
import hashlib
import os
import pty
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from pvc_client import PVCClient
from tests.support.mount import mounted, prodfs

__all__ = ["on_a_terminal", "need_fuse", "Publisher", "sha256", "file_tree", "timed_errno", "status_of", "mounted", "prodfs",
           "blob_problems", "no_mounts_left_behind"]

T = TypeVar("T")


def need_fuse() -> None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        if os.environ.get("CI"):
            pytest.fail("FUSE is not available (/dev/fuse, fusermount3): CI must have it")
        pytest.skip("FUSE is not available")


class Publisher:
    """Talk to a running service from synchronous test code."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            async with PVCClient(self.url) as c:
                return await getattr(c, method)(*args, **kwargs)

        return trio.run(go)

    def run(self, fn: Callable[[PVCClient], Any]) -> Any:
        async def go() -> Any:
            async with PVCClient(self.url) as c:
                return await fn(c)

        return trio.run(go)

    def publish(self, pri: str, directory: Path, **kwargs: Any) -> dict:
        return self.call("publish_directory", pri, directory, **kwargs)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def timed_errno(fn: Callable[[], object]) -> tuple[int | None, float]:
    """Run ``fn``; return (errno it failed with or None, seconds it took)."""
    started = time.monotonic()
    try:
        fn()
    except OSError as exc:
        return exc.errno, time.monotonic() - started
    return None, time.monotonic() - started


def status_of(mountpoint: Path) -> dict:
    import json

    doc = json.loads(prodfs("status", str(mountpoint), "--json").stdout)
    return doc["mounts"][0]


def blob_problems(cache: Path) -> list[str]:
    """Every cached blob must hash to its name: a half or wrong blob is a problem."""
    bad = []
    blobs = cache / "blobs"
    for p in blobs.rglob("*") if blobs.exists() else ():
        if p.is_file() and sha256(p) != p.name:
            bad.append(str(p.relative_to(cache)))
    return bad


def no_mounts_left_behind(base: str) -> Iterator[None]:
    yield
    from mount_tools._mounts import prodfs_mounts, unmount

    for m in prodfs_mounts():
        if m.startswith(base):
            try:
                unmount(m, lazy=True)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


EIO = errno.EIO


def on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with stderr on a pseudo-terminal; its exit code and what the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    proc.communicate(timeout=60)
    return proc.returncode, shown.decode("utf-8", "replace")
