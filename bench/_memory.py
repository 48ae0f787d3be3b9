"""Daemon memory: resident size after serving 100k and 1M files.

A synthetic store on its own service (so the main run's index stays as it
is): products of ``per_product`` files in directories of 100, all with the
same tiny content (one blob; the store dedups it), published through the
client from manifests, no files on disk. One live mount with an empty cache
then serves them in steps: every file of the step's products is listed and
stat'ed (``find -ls``) and one file per product is read. VmRSS of the
daemon is read after each step.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import trio

from pvc_client import PVCClient

from ._run import rss_bytes
from ._targets import ProdFS

__all__ = ["measure_memory"]

_CONTENT = b"prodfs\n"
_PER_DIR = 100


def _pri(i: int) -> str:
    return f"mem:m{i:05d}-files"


def _manifest(files: int, sha: str) -> list[dict]:
    return [{"path": f"d{j // _PER_DIR:03d}/f{j:05d}.dat", "type": "file", "mode": 0o644, "size": len(_CONTENT),
             "sha256": sha} for j in range(files)]


async def _publish(url: str, products: int, per_product: int) -> None:
    sha = hashlib.sha256(_CONTENT).hexdigest()
    manifest = _manifest(per_product, sha)
    async with PVCClient(url, timeout=300.0) as client:
        await client.upload_blob(sha, _CONTENT)
        sem = trio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                await client.publish(_pri(i), manifest)

        async with trio.open_nursery() as nursery:
            for i in range(products):
                nursery.start_soon(one, i)


def _serve(root: Path, first: int, last: int) -> int:
    names = [str(root / _pri(i)) for i in range(first, last)]
    seen = 0
    for k in range(0, len(names), 200):
        batch = names[k:k + 200]
        out = subprocess.run(["find", *batch, "-type", "f", "-ls"], capture_output=True, check=True).stdout
        seen += out.count(b"\n")
        for name in batch:
            Path(name, "d000", "f00000.dat").read_bytes()
    return seen


def measure_memory(workdir: Path, steps: list[int], per_product: int, log) -> dict:  # noqa: ANN001
    """RSS of a live daemon after serving each number of files in ``steps`` (ascending)."""
    from tests.support.service import running_service

    steps = sorted(steps)
    products = max(1, -(-steps[-1] // per_product))
    out: dict = {"per_product": per_product, "content_bytes": len(_CONTENT), "steps": []}
    with running_service(workdir / "mem-pvc") as svc:
        t0 = time.monotonic()
        trio.run(_publish, svc.url, products, per_product)
        out["publish_seconds"] = round(time.monotonic() - t0, 1)
        log(f"memory: published {products} products x {per_product} files in {out['publish_seconds']}s")
        target = ProdFS("live", workdir / "mnt" / "memory", workdir / "mem-cache", workdir / "mem-daemon.log",
                        svc.url, "")
        target.start()
        try:
            pid = target.pid()
            assert pid is not None
            base = rss_bytes(pid) or 0
            out["rss_after_mount"] = base
            done = served = 0
            for files in steps:
                upto = max(1, files // per_product)
                t1 = time.monotonic()
                served += _serve(target.root, done, upto)
                done = upto
                rss = rss_bytes(pid) or 0
                out["steps"].append({
                    "files": served,
                    "rss": rss,
                    "bytes_per_file": round(rss / served, 1),
                    "bytes_per_file_over_mount": round((rss - base) / served, 1),
                    "serve_seconds": round(time.monotonic() - t1, 1),
                })
                log(f"memory: {served} files served, RSS {rss / 2**20:.1f} MiB ({rss / served:.0f} B/file)")
        finally:
            target.stop()
    return out
