"""Profile the daemon under one workload: where its time goes, before optimizing.

    python -m bench.profile_daemon --pvc URL [--snapshot ID] --cache-dir D --workload small [--repeat 5]

Starts ``prodfs.mount.daemon`` under cProfile on a temporary mountpoint, runs the
workload from this process, unmounts (the daemon then writes its profile)
and prints the functions with the most own time and cumulative time.
Workloads: ``lookup`` (lstat every root name of a fresh mount), ``walk``
(``find -ls``), ``small`` (open+read+close of every file under 64 KiB),
``seq`` (read every file over 64 MiB). cProfile adds a cost per Python
call: compare shares between functions, not absolute times with a run of
``python -m bench run``.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._measure import _read_all
from ._system import unmount

WORKLOADS = ("lookup", "walk", "small", "seq")


def _files(root: Path, small: bool) -> list[str]:
    out = []
    for top, dirs, names in os.walk(root):
        if ".prodfs" in dirs:
            dirs.remove(".prodfs")
        for n in names:
            p = os.path.join(top, n)
            size = os.lstat(p).st_size
            if (small and 0 < size < 65536) or (not small and size > 64 << 20):
                out.append(p)
    return out


def run_workload(root: Path, workload: str, repeat: int) -> None:
    if workload == "lookup":
        names = [n for n in os.listdir(root) if n != ".prodfs"]
        for _ in range(repeat):
            for n in names:
                # an explicit name the kernel has not cached yet: one LOOKUP each
                os.lstat(root / n)
            subprocess.run(["sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"], check=False)
    elif workload == "walk":
        for _ in range(repeat):
            subprocess.run(["find", str(root), "-ls"], stdout=subprocess.DEVNULL, check=True)
    else:
        files = _files(root, workload == "small")
        for _ in range(repeat):
            _read_all(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pvc", required=True)
    ap.add_argument("--snapshot")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--workload", choices=WORKLOADS, required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None, help="keep the profile here")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prodfs-prof-") as tmp:
        mnt = Path(tmp, "mnt")
        mnt.mkdir()
        prof = args.out or str(Path(tmp, "daemon.prof"))
        cmd = [sys.executable, "-m", "cProfile", "-o", prof, "-m", "prodfs.mount.daemon", str(mnt), "--pvc", args.pvc,
               "--cache-dir", args.cache_dir, "--log-level", "warning", "--log-file", str(Path(tmp, "log"))]
        if args.snapshot:
            cmd += ["--snapshot", args.snapshot]
        r, w = os.pipe()
        proc = subprocess.Popen([*cmd, "--ready-fd", str(w)], pass_fds=(w,))
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            answer = pipe.readline().strip()
        if answer != b"ready":
            proc.kill()
            print(f"the daemon did not start: {answer!r}", file=sys.stderr)
            return 1
        t0 = time.perf_counter()
        try:
            run_workload(mnt, args.workload, args.repeat)
        finally:
            elapsed = time.perf_counter() - t0
            unmount(mnt)
            proc.wait(timeout=60)
        print(f"workload {args.workload} x{args.repeat}: {elapsed:.3f}s")
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
