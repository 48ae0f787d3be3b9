"""Mount ProdFS for a test: the real ``prodfs mount`` in a subprocess, and checks on its log.

Like the service fixture, this runs the code the way a studio would: the
``prodfs`` command detaches a daemon, which must be serving when it returns.
At the end the mount is unmounted and its log is checked: a traceback or an
"unexpected error" fails the test even if every assertion passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Mount", "mounted", "prodfs", "BAD_LOG", "wait_for"]

BAD_LOG = re.compile(r"Traceback|unexpected error|CRITICAL")
PRODFS = [sys.executable, "-m", "mount_tools.cli"]


def prodfs(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``prodfs`` command line as a user would."""
    res = subprocess.run([*PRODFS, *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"prodfs {' '.join(args)} exited {res.returncode}: {res.stderr}")
    return res


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Mount:
    def __init__(self, path: Path, log: Path, cache: Path) -> None:
        self.path = path
        self.log = log
        self.cache = cache

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def control(self, name: str) -> dict:
        return json.loads((self.path / ".prodfs" / name).read_text())

    def pid(self) -> int:
        return int(self.control("stats.json")["pid"])


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running after {timeout}s")


@contextlib.contextmanager
def mounted(
    tmp_path: Path,
    pvc_url: str,
    *args: str,
    name: str = "mnt",
    cache: Path | None = None,
    allow_log: re.Pattern | None = None,
) -> Iterator[Mount]:
    """Mount with ``prodfs mount`` (detached daemon), unmount with ``prodfs umount``."""
    mnt = tmp_path / name
    with contextlib.suppress(FileExistsError, ConnectionAbortedError, OSError):
        mnt.mkdir()  # a dead mount left here answers ENOTCONN: prodfs mount recovers it
    log = tmp_path / f"{name}.log"
    cache = cache or tmp_path / f"{name}-cache"
    prodfs("mount", str(mnt), "--pvc", pvc_url, "--cache-dir", str(cache), "--log-file", str(log),
           "--log-level", "debug", *args)
    m = Mount(mnt, log, cache)
    res = None
    try:
        yield m
    finally:
        pid = None
        with contextlib.suppress(Exception):
            pid = m.pid()
        res = prodfs("umount", str(mnt), check=False)
        if res.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        if pid:
            with contextlib.suppress(AssertionError):
                wait_gone(pid)
    text = m.log_text()
    bad = [line for line in text.splitlines()
           if BAD_LOG.search(line) and not (allow_log and allow_log.search(line))]
    assert not bad, "daemon log has unexpected errors:\n" + "\n".join(bad[:20]) + "\n--- log tail ---\n" + text[-3000:]
    assert res is not None and res.returncode == 0, f"umount failed: {res and res.stderr}"
