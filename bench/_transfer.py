"""Whole-tree transfers beside ``tar``: publishing the tree, and prefetching it into an empty cache.

The reference is a plain copy on the same disk, measured in the same run:
``tar -C SRC -cf - . | tar -C DST -xf -`` of the plain directory every
target serves. Against it:

- publish: every product of that directory published to a new, empty PVC
  service on loopback in one call (the client's ``publish_directories``),
  which hashes, uploads in packs and stores durably before it publishes;
- prefetch: ``prodfs prefetch --snapshot`` of the run's snapshot into an
  empty cache (a process of its own, as on a render node), which fetches in
  packs, hashes and records every payload.

Each sample starts with the page cache dropped (when it can be) and the
destination empty; throughput is the tree's bytes over the wall time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

from ._system import BenchError, drop_caches
from ._tree import Dataset

__all__ = ["measure_transfers", "tree_size"]

Log = Callable[[str], None]


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``."""
    files = size = 0
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            files += 1
            size += p.stat().st_size
    return files, size


def _tar(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    pack = subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "."], stdout=subprocess.PIPE)
    unpack = subprocess.run(["tar", "-C", str(dst), "-xf", "-"], stdin=pack.stdout, capture_output=True)
    assert pack.stdout is not None
    pack.stdout.close()
    if pack.wait() != 0 or unpack.returncode != 0:
        raise BenchError(f"tar failed: {unpack.stderr.decode(errors='replace')[-300:]}")


def _publish(url: str, src: Path) -> None:
    from pvc_client import PVCClient, Publication

    async def go() -> None:
        async with PVCClient(url, timeout=120.0) as client:
            await client.publish_directories([Publication(product.name, product, labels=["published"])
                                              for product in sorted(p for p in src.iterdir() if p.is_dir())])

    trio.run(go)


def _prefetch(url: str, snapshot: str, cache: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "mount_tools.cli", "prefetch", "--snapshot", snapshot,
                          "--pvc", url, "--cache-dir", str(cache), "--json"], capture_output=True, text=True)
    if res.returncode != 0:
        raise BenchError(f"prodfs prefetch failed: {res.stderr.strip()[-300:]}")


def measure_transfers(work: Path, ds: Dataset, url: str, reps: int, drop: bool, log: Log) -> dict:
    """{"tar"|"publish"|"prefetch": [seconds per repetition], "files": N, "bytes": N}."""
    from tests.support.service import running_service

    src = ds.native
    files, size = tree_size(src)
    out: dict = {"files": files, "bytes": size, "seconds": {"tar": [], "publish": [], "prefetch": []}}
    scratch = work / "transfer"

    def timed(kind: str, fn: Callable[[], None]) -> None:
        if drop:
            drop_caches(3)
        started = time.perf_counter()
        fn()
        out["seconds"][kind].append(time.perf_counter() - started)

    for rep in range(reps):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        # rotated, as the measurements are: a slow spell does not land on one kind
        kinds = ["tar", "publish", "prefetch"]
        kinds = kinds[rep % 3:] + kinds[:rep % 3]
        for kind in kinds:
            if kind == "tar":
                timed("tar", lambda: _tar(src, scratch / "tar"))
            elif kind == "publish":
                with running_service(scratch / "pvc") as svc:
                    timed("publish", lambda: _publish(svc.url, src))
            else:
                timed("prefetch", lambda: _prefetch(url, ds.snapshot_id, scratch / "cache"))
        log(f"transfers, repetition {rep + 1}/{reps}: " + ", ".join(
            f"{k} {v[-1]:.2f}s" for k, v in out["seconds"].items()))
    shutil.rmtree(scratch, ignore_errors=True)
    return out
