"""Finding, checking and unmounting ProdFS mounts (no daemon code here)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

__all__ = ["prodfs_mounts", "is_dead", "force_unmount", "unmount", "read_control", "find_mount_of", "QuietError",
           "with_timeout"]

FSTYPE = "fuse.prodfs"


class QuietError(Exception):
    """A user error: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def prodfs_mounts() -> list[str]:
    """Mountpoints of every ProdFS mount on this machine, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == FSTYPE:
                out.append(_unescape(left.split()[4]))
    return out


def is_dead(path: str) -> bool:
    """True for a FUSE mount whose daemon is gone ("Transport endpoint is not connected")."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def _fusermount() -> str:
    return shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"


def unmount(path: str, *, lazy: bool = False) -> None:
    cmd = [_fusermount(), "-u"] + (["-z"] if lazy else []) + [path]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        if os.getuid() == 0:  # root may also use umount(8) when fusermount refuses
            res2 = subprocess.run(["umount"] + (["-l"] if lazy else []) + [path], capture_output=True, text=True)
            if res2.returncode == 0:
                return
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise QuietError(f"cannot unmount {path}: {msg[-1] if msg else 'fusermount failed'}", 3)


def force_unmount(path: str) -> None:
    unmount(path, lazy=True)


def with_timeout(fn, timeout: float):
    result: list = []

    def target() -> None:
        try:
            result.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append((False, exc))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise TimeoutError(f"no answer within {timeout:.0f}s")
    ok, value = result[0]
    if not ok:
        raise value
    return value


def read_control(mountpoint: str, name: str, timeout: float = 5.0) -> dict:
    """Read ``.prodfs/<name>`` of a mount, never hanging on a stuck mount."""
    path = Path(mountpoint, ".prodfs", name)
    return with_timeout(lambda: json.loads(path.read_bytes()), timeout)


def get_control_xattr(mountpoint: str, attr: str, timeout: float = 15.0) -> dict:
    path = os.path.join(mountpoint, ".prodfs")
    return with_timeout(lambda: json.loads(os.getxattr(path, attr)), timeout)


def find_mount_of(path: str) -> tuple[str, str]:
    """The ProdFS mountpoint holding ``path`` and the path inside it (no symlinks followed)."""
    full = os.path.abspath(path)
    best = ""
    for m in prodfs_mounts():
        if (full == m or full.startswith(m.rstrip("/") + "/")) and len(m) > len(best):
            best = m
    if not best:
        raise QuietError(f"{path}: not inside a ProdFS mount", 5)
    return best, os.path.relpath(full, best)
