"""Reads through a ``prodfs exec`` view against the same reads through a ``prodfs mount``.

    python -m bench.exec_reads [--repeat 5] [--files 1000] [--workdir DIR]

Publishes a tree of small files to a fresh local service, prefetches its
snapshot, then, each repetition, reads the whole tree (one cold pass after
the page cache is dropped, then warm passes) through a fresh ``prodfs mount``
of the snapshot and through a fresh ``prodfs exec --snapshot`` context, and
prints both sets of timings. A view is a bind of the context daemon's own
mount into a private namespace, so the two should not differ beyond noise.
As root (to drop the page cache).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from prodfs.resolution import Context, create_snapshot
from pvc_client import PVCClient

PRODFS = [sys.executable, "-m", "mount_tools.cli"]
PRI = "bench:exec-model:tree"

# run inside the view (or on the mount): one cold pass, then two warm ones
_READER = """
import json, os, sys, time
def walk_read(root):
    t = time.perf_counter()
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                fh.read()
    return time.perf_counter() - t
root = sys.argv[1]
cold = walk_read(root); walk_read(root); warm = walk_read(root)
print(json.dumps({"cold_ms": cold * 1000, "warm_ms": warm * 1000}))
"""


def _drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _read(prefix: list[str], root: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([*prefix, sys.executable, "-c", _READER, str(root / PRI)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(args: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.exec_reads", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--workdir", type=Path, default=None)
    opts = p.parse_args(args)
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="prodfs-exec-bench."))
    src, cache, mnt, view = work / "src", work / "cache", work / "m", work / "p"
    for i in range(opts.files):
        d = src / f"d{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(os.urandom(4096))
    mnt.mkdir()
    env = {**os.environ, "PRODFS_EXEC_DIR": str(work / "exec")}
    ready = work / "ready"
    service = subprocess.Popen([sys.executable, "-m", "pvc_client.cli", "serve", "--data", str(work / "data"),
                                "--port", "0", "--ready-file", str(ready)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            if time.monotonic() > deadline or service.poll() is not None:
                raise SystemExit("the service did not start")
            time.sleep(0.05)
        url = ready.read_text().strip().splitlines()[0]
        subprocess.run([sys.executable, "-m", "pvc_client.cli", "publish", PRI, str(src), "--url", url],
                       check=True, capture_output=True)

        async def snapshot() -> str:
            async with PVCClient(url) as client:
                return (await create_snapshot(client, Context(roots=(PRI,))))["id"]

        sid = trio.run(snapshot)
        context = ["--pvc", url, "--snapshot", sid, "--cache-dir", str(cache)]
        subprocess.run([*PRODFS, "prefetch", "--snapshot", sid, "--pvc", url, "--cache-dir", str(cache)],
                       check=True, capture_output=True)
        results: dict[str, list[dict[str, float]]] = {"prodfs mount": [], "prodfs exec": []}
        for _ in range(opts.repeat):
            subprocess.run([*PRODFS, "mount", str(mnt), *context], check=True)
            _drop_caches()
            results["prodfs mount"].append(_read([], mnt, env))
            subprocess.run([*PRODFS, "umount", str(mnt)], check=True)
            _drop_caches()
            results["prodfs exec"].append(_read([*PRODFS, "exec", *context, "--at", str(view), "--"], view, env))
        print(f"{opts.files} files of 4 KiB, payloads in the local cache, a fresh daemon each time "
              f"(load average {os.getloadavg()[0]:.2f})")
        for name, runs in results.items():
            cold = sorted(r["cold_ms"] for r in runs)
            warm = sorted(r["warm_ms"] for r in runs)
            print(f"  {name:13} cold {cold[0]:.0f}-{cold[-1]:.0f} ms (median {cold[len(cold) // 2]:.0f}), "
                  f"warm {warm[0]:.0f}-{warm[-1]:.0f} ms (median {warm[len(warm) // 2]:.0f})")
    finally:
        service.terminate()
        service.wait(timeout=30)
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
