"""The measurements: each runs on any target and returns figures for one sample.

A measurement is ``fn(target, dataset) -> {figure: value}``. ``prepare`` says
what state a sample starts from:

- ``warm``: the operation is run once untimed, then timed;
- ``cold``: a fresh mount (ProdFS: a new daemon; the plain directory: as is)
  and the page cache, dentries and inodes dropped;
- ``fresh``: a fresh mount, caches kept (first access after mounting);
- ``lookup``: a fresh mount and dentries and inodes dropped, page cache kept.

Timing is wall clock around the operation only (``perf_counter``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._targets import Target
from ._tree import Dataset

__all__ = ["Measure", "MEASURES", "by_name", "small_sample"]

SMALL_SAMPLE = 1000
RANDOM_READS = 2000
PARALLEL_FILES = 10_000
_BUF = 1 << 20


@dataclass(frozen=True)
class Measure:
    name: str
    title: str
    unit: str
    better: str  # "lower" | "higher"
    prepare: str  # "warm" | "cold" | "fresh" | "lookup"
    fn: Callable[[Target, Dataset], dict[str, float]] = field(repr=False)
    figures: tuple[str, ...] = ()  # the figures of a sample, when fn returns several; default (name,)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.figures or (self.name,)


def small_sample(ds: Dataset, n: int = SMALL_SAMPLE) -> list[str]:
    """``n`` small files spread over every product (the same ones on every target)."""
    files = ds.small_files
    if len(files) <= n:
        return list(files)
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def _read_all(paths: list[str]) -> int:
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while chunk := os.read(fd, _BUF):
                total += len(chunk)
        finally:
            os.close(fd)
    return total


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- metadata ------------------------------------------------------------------
def walk_find(t: Target, ds: Dataset) -> dict[str, float]:
    cmd = ["find", str(t.root), "-name", ".prodfs", "-prune", "-o", "-ls"]
    return {"walk_find": _timed(lambda: subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)) * 1000}


def walk_py(t: Target, ds: Dataset) -> dict[str, float]:
    def go() -> None:
        n = 0
        for top, dirs, files in os.walk(t.root):
            if ".prodfs" in dirs:
                dirs.remove(".prodfs")
            for name in files:
                os.lstat(os.path.join(top, name))
                n += 1
        if n < len(ds.small_files):
            raise RuntimeError(f"{t.name}: the walk saw {n} files, fewer than the {len(ds.small_files)} published")

    return {"walk_py": _timed(go) * 1000}


# -- data ----------------------------------------------------------------------
def small_read(t: Target, ds: Dataset) -> dict[str, float]:
    paths = [str(t.root / p) for p in small_sample(ds)]
    expected = ds.spec.file_size * len(paths)
    got = 0

    def go() -> None:
        nonlocal got
        got = _read_all(paths)

    seconds = _timed(go)
    if got != expected:
        raise RuntimeError(f"{t.name}: read {got} bytes of small files, expected {expected}")
    return {"small_read": seconds / len(paths) * 1e6}  # milliseconds per 1,000 files


def seq_read(t: Target, ds: Dataset) -> dict[str, float]:
    path = t.root / ds.big_files[0]
    buf = bytearray(_BUF)
    total = 0

    def go() -> None:
        nonlocal total
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n

    seconds = _timed(go)
    if total != ds.spec.big_size:
        raise RuntimeError(f"{t.name}: read {total} bytes of {path}, expected {ds.spec.big_size}")
    return {"seq_read": total / seconds / 1e9}  # GB/s


def random_4k(t: Target, ds: Dataset) -> dict[str, float]:
    rng = random.Random(11)
    blocks = ds.spec.big_size // 4096
    offsets = [rng.randrange(blocks) * 4096 for _ in range(RANDOM_READS)]
    fd = os.open(t.root / ds.big_files[0], os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for off in offsets:
            os.pread(fd, 4096, off)
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {"random_4k": seconds / len(offsets) * 1e6}  # microseconds per read


def _reader(paths: list[str], barrier) -> None:  # noqa: ANN001 - a multiprocessing barrier
    barrier.wait()
    _read_all(paths)


def parallel(n: int) -> Callable[[Target, Dataset], dict[str, float]]:
    def fn(t: Target, ds: Dataset) -> dict[str, float]:
        files = [str(t.root / p) for p in small_sample(ds, PARALLEL_FILES)]
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(n + 1)
        procs = [ctx.Process(target=_reader, args=(files[i::n], barrier)) for i in range(n)]
        for p in procs:
            p.start()
        barrier.wait()  # every reader is up: time the reading only
        t0 = time.perf_counter()
        for p in procs:
            p.join()
        seconds = time.perf_counter() - t0
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"{t.name}: {len(failed)} of {n} readers failed")
        return {f"parallel_{n}": len(files) / seconds}  # files per second

    return fn


# -- names -----------------------------------------------------------------------
def first_access(t: Target, ds: Dataset) -> dict[str, float]:
    path = t.root / ds.small_files[0]
    return {"first_access": _timed(path.read_bytes) * 1000}


def lookup(t: Target, ds: Dataset) -> dict[str, float]:
    names = list(ds.versionless)
    random.Random(5).shuffle(names)
    lat = []
    for name in names:
        p = os.path.join(t.root, name)
        t0 = time.perf_counter_ns()
        os.lstat(p)
        lat.append((time.perf_counter_ns() - t0) / 1e6)
    lat.sort()
    return {"lookup_p50": _pct(lat, 50), "lookup_p99": _pct(lat, 99)}


def _pct(sorted_values: list[float], p: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(p) - 1]


_USD = """
import sys, time
from pxr import Usd
t0 = time.perf_counter()
stage = Usd.Stage.Open(sys.argv[1])
prims = sum(1 for _ in stage.Traverse())
print(time.perf_counter() - t0, prims)
"""


def usd_open(t: Target, ds: Dataset) -> dict[str, float]:
    assert ds.usd_layer is not None
    res = subprocess.run([sys.executable, "-c", _USD, str(t.root / ds.usd_layer)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{t.name}: usd open failed: {res.stderr.strip()[-300:]}")
    seconds, prims = res.stdout.split()
    if int(prims) < 5:
        raise RuntimeError(f"{t.name}: the composed shot has only {prims} prims")
    return {"usd_open": float(seconds) * 1000}


MEASURES: list[Measure] = [
    Measure("walk_find_warm", "find -ls of the tree, warm", "ms", "lower", "warm", walk_find),
    Measure("walk_find_cold", "find -ls of the tree, cold", "ms", "lower", "cold", walk_find),
    Measure("walk_py_warm", "os.walk + lstat, warm", "ms", "lower", "warm", walk_py),
    Measure("walk_py_cold", "os.walk + lstat, cold", "ms", "lower", "cold", walk_py),
    Measure("small_read_warm", "open+read+close of 1,000 small files, warm", "ms", "lower", "warm", small_read),
    Measure("small_read_cold", "open+read+close of 1,000 small files, cold", "ms", "lower", "cold", small_read),
    Measure("seq_read_warm", "sequential read of a large file, warm", "GB/s", "higher", "warm", seq_read),
    Measure("seq_read_cold", "sequential read of a large file, cold", "GB/s", "higher", "cold", seq_read),
    Measure("random_4k_warm", "random 4 KiB reads of a large file, warm", "us/read", "lower", "warm", random_4k),
    Measure("parallel_1", "small files read by 1 process, warm", "files/s", "higher", "warm", parallel(1)),
    Measure("parallel_4", "small files read by 4 processes, warm", "files/s", "higher", "warm", parallel(4)),
    Measure("parallel_16", "small files read by 16 processes, warm", "files/s", "higher", "warm", parallel(16)),
    Measure("first_access", "first access to a versionless path on a fresh mount", "ms", "lower", "fresh",
            first_access),
    Measure("lookup", "lookup of every versionless name, uncached", "ms", "lower", "lookup", lookup,
            ("lookup_p50", "lookup_p99")),
    Measure("usd_open", "open and compose the demo shot (usd-core), warm", "ms", "lower", "warm", usd_open),
]


def by_name(names: list[str] | None) -> list[Measure]:
    if not names:
        return list(MEASURES)
    known = {m.name: m for m in MEASURES}
    unknown = [n for n in names if n not in known]
    if unknown:
        from ._system import BenchError

        raise BenchError(f"unknown measurement(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]
