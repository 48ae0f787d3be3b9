"""The machine side of a run: the peers' packages, the page cache, the description.

Everything here needs root for its full effect (installing packages, dropping
the page cache); without it the harness still runs and says what it skipped.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

__all__ = ["ensure_tools", "can_drop_caches", "drop_caches", "machine", "unmount", "BenchError"]

# command -> the Debian package that provides it
TOOLS = {"bindfs": "bindfs", "squashfuse": "squashfuse", "mksquashfs": "squashfs-tools"}


class BenchError(Exception):
    """A problem that stops the run: reported as one line, no traceback."""


def ensure_tools(log) -> dict[str, str]:  # noqa: ANN001 - a print-like callable
    """Install the peers from Debian's packages when missing; return {command: path}."""
    missing = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise BenchError(f"missing {', '.join(missing)}: install them (apt-get install {' '.join(missing)})")
        log(f"installing {' '.join(missing)} from Debian's packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise BenchError(f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
    found = {cmd: shutil.which(cmd) for cmd in TOOLS}
    lost = [c for c, p in found.items() if p is None]
    if lost:
        raise BenchError(f"still missing after installing: {', '.join(lost)}")
    return {c: str(p) for c, p in found.items()}


def can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


# After a drop the kernel goes on freeing what it dropped for a while: lookups
# timed at once had 4-8 ms outliers (their p99) that a pause of 0.3 s removed.
SETTLE = 0.5


def drop_caches(what: int = 3) -> None:
    """1: page cache; 2: dentries and inodes; 3: both. Needs root."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(f"{what}\n")
    time.sleep(SETTLE)


def unmount(path: Path) -> None:
    """Unmount a FUSE mount whatever its library (fuse 2 or 3); lazily as a last resort."""
    for cmd in (["fusermount3", "-u", str(path)], ["fusermount", "-u", str(path)], ["umount", str(path)],
                ["umount", "-l", str(path)]):
        if shutil.which(cmd[0]) is None:
            continue
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            return
    if os.path.ismount(path):
        raise BenchError(f"cannot unmount {path}")


def _first(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _version(cmd: list[str]) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (res.stdout or res.stderr).strip().splitlines()
    return out[0] if out else None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def machine() -> dict:
    """What the figures were measured on."""
    import pyfuse3
    import trio

    mem = _first("/proc/meminfo", "MemTotal")
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "host": platform.node(),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        # a build without PGO, or with a shared libpython, runs the daemon noticeably slower
        "python_build": {
            "executable": os.path.realpath(sys.executable),
            "pgo": "--enable-optimizations" in (sysconfig.get_config_var("CONFIG_ARGS") or ""),
            "shared_libpython": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
        },
        "pyfuse3": getattr(pyfuse3, "__version__", None),
        "libfuse": _version(["fusermount3", "--version"]),
        "trio": trio.__version__,
        "bindfs": _version(["bindfs", "--version"]),
        "squashfuse": _version(["squashfuse", "--version"]),
        "mksquashfs": _version(["mksquashfs", "-version"]),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "root": os.geteuid() == 0,
    }
