"""The mounts a run compares: native disk, bindfs, squashfuse and ProdFS in its modes.

Each target serves the same tree at ``root/<PRI>/...``. ``fresh()`` gives a
new mount (what "cold" starts from); for the plain directory it does nothing.
ProdFS is the real daemon started as ``prodfs mount`` starts it (the run
remounts often: one interpreter start instead of two), logging at
``warning`` so that logging is not what is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._system import BenchError, unmount

__all__ = ["Target", "Native", "Bindfs", "Squashfuse", "ProdFS", "PRODFS_MODES"]

# mode -> what it stands for (docs/benchmarks.md)
PRODFS_MODES = {
    "snapshot": "snapshot mount (pinned, immutable names), local cache prefetched",
    "live": "live context of the tree's products (its roots) following the change feed, local cache kept "
            "between mounts",
    "empty": "the snapshot's context with the local cache emptied at every mount",
}


class Target:
    name = ""
    kind = ""  # "native" | "c" | "prodfs"
    description = ""
    warm = True  # measured warm too (an emptied cache is only measured cold: warm, it is the live mode)

    def __init__(self, root: Path) -> None:
        self.root = root

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def fresh(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        return None

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "description": self.description, "root": str(self.root)}


class Native(Target):
    name, kind, description = "native", "native", "the plain directory on the local disk (the limit)"


class _FuseCommand(Target):
    """A peer mounted by a command line and unmounted with fusermount."""

    def __init__(self, mnt: Path) -> None:
        super().__init__(mnt)
        mnt.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        if os.path.ismount(self.root):
            return
        res = subprocess.run(self.command(), capture_output=True, text=True)
        if res.returncode != 0 or not _wait_mounted(self.root):
            raise BenchError(f"{self.name}: {' '.join(self.command())} failed: {res.stderr.strip()}")

    def stop(self) -> None:
        if os.path.ismount(self.root):
            unmount(self.root)


class Bindfs(_FuseCommand):
    name, kind, description = "bindfs", "c", "bindfs -r over the plain directory (C FUSE passthrough)"

    def __init__(self, mnt: Path, source: Path) -> None:
        super().__init__(mnt)
        self.source = source

    def command(self) -> list[str]:
        return ["bindfs", "-r", str(self.source), str(self.root)]


class Squashfuse(_FuseCommand):
    name, kind, description = "squashfuse", "c", "squashfuse over a squashfs image of the plain directory"

    def __init__(self, mnt: Path, image: Path) -> None:
        super().__init__(mnt)
        self.image = image

    def command(self) -> list[str]:
        return ["squashfuse", str(self.image), str(self.root)]


class ProdFS(Target):
    kind = "prodfs"

    def __init__(self, mode: str, mnt: Path, cache: Path, log: Path, url: str, snapshot_id: str,
                 roots: Sequence[str] = ()) -> None:
        super().__init__(mnt)
        self.roots = list(roots)  # a live mount's roots: their closure is loaded at its start
        mnt.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.name = f"prodfs-{mode}"
        self.description = PRODFS_MODES[mode]
        self.warm = mode != "empty"
        self.cache, self.log, self.url, self.snapshot_id = cache, log, url, snapshot_id
        self._proc: subprocess.Popen | None = None

    def _cli(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mount_tools.cli", *args], capture_output=True, text=True,
                              timeout=timeout)

    def prefetch(self) -> dict:
        res = self._cli("prefetch", "--snapshot", self.snapshot_id, "--pvc", self.url, "--cache-dir",
                        str(self.cache), "--json")
        if res.returncode != 0:
            raise BenchError(f"prodfs prefetch failed: {res.stderr.strip()}")
        return json.loads(res.stdout)

    def start(self) -> None:
        if os.path.ismount(self.root):
            return
        if self.mode == "empty":
            shutil.rmtree(self.cache, ignore_errors=True)
        args = [str(self.root), "--pvc", self.url, "--cache-dir", str(self.cache),
                "--log-file", str(self.log), "--log-level", "warning"]
        if self.mode in ("snapshot", "empty"):
            args += ["--snapshot", self.snapshot_id]
        else:
            args += [f"--root={root}" for root in self.roots]
        # The daemon itself, as `prodfs mount` starts it (one interpreter start
        # instead of two: the run remounts often), waiting for its "ready".
        r, w = os.pipe()
        proc = subprocess.Popen([sys.executable, "-m", "prodfs.mount.daemon", *args, "--ready-fd", str(w)],
                                pass_fds=(w,), start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            answer = pipe.readline().decode(errors="replace").strip()
        if answer != "ready":
            proc.kill()
            raise BenchError(f"{self.name}: the daemon did not start: {answer or 'no answer'} (see {self.log})")
        self._proc = proc

    def stop(self) -> None:
        if os.path.ismount(self.root):
            unmount(self.root)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def control(self, name: str) -> dict:
        return json.loads((self.root / ".prodfs" / name).read_text())

    def to_json(self) -> dict:
        return {**super().to_json(), "mode": self.mode, "cache": str(self.cache)}


def _wait_mounted(path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(path):
            return True
        time.sleep(0.02)
    return False
