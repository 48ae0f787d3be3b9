"""Who uses a shared context mount (``prodfs exec``): one record per wrapper, and whether it is still alive.

A context directory holds ``users/``, one JSON record per ``prodfs exec`` that
runs a command in that context::

    {"wrapper_pid": ..., "wrapper_start": ..., "child_pid": ..., "child_start": ...,
     "mnt_ns": "mnt:[4026532801]", "started": 1733222400.0}

A record is alive while its wrapper or its child runs (the same pid with the
same start time, so a reused pid does not count), or, once both are gone,
while any process is still in the child's mount namespace (a command that left
a process behind). The daemon started with ``--exit-when-unused USERS_DIR``
unmounts itself when no record is alive; ``prodfs exec`` and ``prodfs status``
read the same records.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

__all__ = ["proc_start", "mount_namespace", "namespaces_in_use", "read_records", "live_records", "try_lock",
           "lock", "LOCK_NAME"]

LOCK_NAME = "lock"


def proc_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot, /proc/PID/stat field 22), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rpartition(b")")[2].split()
    try:
        if fields[0] == b"Z":  # a zombie has finished: it uses nothing any more
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def mount_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def namespaces_in_use() -> set[str]:
    """The mount namespace of every process this user may look at."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            ns = mount_namespace(name)
            if ns:
                found.add(ns)
    return found


def read_records(users_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    try:
        names = sorted(os.listdir(users_dir))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        path = Path(users_dir, name)
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # being written, or removed meanwhile
    return out


def _pid_alive(rec: dict, which: str) -> bool:
    pid = rec.get(f"{which}_pid")
    return bool(pid) and proc_start(int(pid)) == rec.get(f"{which}_start")


def live_records(users_dir: Path, *, prune: bool = False) -> list[dict]:
    """The records of ``users_dir`` still alive; with ``prune``, the dead ones are removed."""
    live, unsure = [], []
    for path, rec in read_records(users_dir):
        if _pid_alive(rec, "wrapper") or _pid_alive(rec, "child"):
            live.append(rec)
        else:
            unsure.append((path, rec))
    if unsure:
        in_use = namespaces_in_use()  # a scan of /proc: only when the recorded processes are gone
        for path, rec in unsure:
            if rec.get("mnt_ns") and rec["mnt_ns"] in in_use:
                live.append(rec)
            elif prune:
                with contextlib.suppress(OSError):
                    path.unlink()
    return live


def try_lock(path: Path) -> int | None:
    """The fd of ``path`` locked exclusively (flock), or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def lock(path: Path):
    """Hold the context's lock (blocking) for the body."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)
