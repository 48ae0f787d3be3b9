"""64 reader processes against one live mount: walks, opens, reads, USD opens, for a bounded time.

Zero errors, nobody stuck (every process ends, every operation within a
generous bound), and every byte read is the source's. The short version runs
in CI; ``--run-slow`` runs it for a minute and records the figures.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prodfs_demo import DemoShow, build, check_stage, default_start, publish
from tests.support.helpers import Publisher, mounted, need_fuse
from tests.load.report import record, summary

pytestmark = pytest.mark.fuse

PROCESSES = 64
USD_EVERY = 8  # one reader in eight also opens USD stages (pxr is heavy to load)
BOUND = 30.0  # seconds: an operation slower than this is a hang


def _expectations(show: DemoShow, plan_dir: Any) -> tuple[dict[str, str], dict[str, set[str]]]:
    files: dict[str, str] = {}
    listings: dict[str, set[str]] = {}
    for pri, number in show.selection().items():
        src = Path(plan_dir(pri, number))
        listings[pri] = set()
        for p in src.rglob("*"):
            rel = p.relative_to(src).as_posix()
            listings[pri].add(rel)
            if p.is_file() and not p.is_symlink():
                files[f"{pri}/{rel}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files, listings


def _reader(idx: int, mnt: str, files: dict[str, str], listings: dict[str, set[str]], stages: dict[str, Any],
            show: DemoShow, until: float, queue: Any) -> None:
    rnd = random.Random(idx)
    ops: Counter[str] = Counter()
    latencies: list[float] = []
    errors: list[str] = []
    kinds = ["walk", "read", "read", "read", "stat"] + (["usd"] if idx % USD_EVERY == 0 else [])
    names = sorted(files)
    if "usd" in kinds:
        from pxr import Usd  # loading pxr takes seconds: not an operation's latency
    # every kind once first, however long loading pxr took on a loaded machine,
    # then at random until the time is up
    first = list(dict.fromkeys(kinds))
    while first or time.monotonic() < until:
        op = first.pop(0) if first else rnd.choice(kinds)
        started = time.monotonic()
        try:
            if op == "walk":
                pri = rnd.choice(sorted(listings))
                top = os.path.join(mnt, pri)
                seen = {os.path.relpath(os.path.join(d, n), top) for d, ds, fs in os.walk(top) for n in ds + fs}
                if seen != listings[pri]:
                    errors.append(f"walk {pri}: {sorted(seen ^ listings[pri])[:5]}")
            elif op == "read":
                rel = rnd.choice(names)
                with open(os.path.join(mnt, rel), "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() != files[rel]:
                        errors.append(f"read {rel}: not the source's bytes")
            elif op == "stat":
                os.stat(os.path.join(mnt, rnd.choice(names)))
            else:
                pri = rnd.choice(sorted(stages))
                stage = Usd.Stage.Open(os.path.join(mnt, pri, show.products[pri].layer))
                problems = check_stage(stage, stages[pri])
                del stage
                if problems:
                    errors.append(f"usd {pri}: {problems[:3]}")
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(f"{op}: {exc!r}")
        ops[op] += 1
        latencies.append(time.monotonic() - started)
    queue.put((idx, dict(ops), latencies, errors))


@pytest.mark.parametrize("seconds", [3, pytest.param(60, marks=pytest.mark.slow)])
def test_many_readers(tmp_path: Path, pvc_url: str, seconds: int) -> None:
    need_fuse()
    plan = build(tmp_path / "show", start=default_start())
    show = Publisher(pvc_url).run(lambda c: publish(c, plan))
    files, listings = _expectations(show, plan.directory)
    selection = show.selection()
    stages = {pri: show.compose(pri, selection) for pri in selection}
    ctx = multiprocessing.get_context("fork")
    with mounted(tmp_path, pvc_url) as m:
        queue = ctx.Queue()
        until = time.monotonic() + seconds
        procs = [ctx.Process(target=_reader, args=(i, str(m.path), files, listings, stages, show, until, queue))
                 for i in range(PROCESSES)]
        started = time.monotonic()
        for p in procs:
            p.start()
        results = [queue.get(timeout=seconds + 120) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0, f"reader {p.pid} ended with {p.exitcode}"
        wall = time.monotonic() - started
        stats = m.control("stats.json")
    errors = [e for _, _, _, errs in results for e in errs]
    latencies = [x for _, _, lat, _ in results for x in lat]
    ops: Counter[str] = Counter()
    for _, o, _, _ in results:
        ops.update(o)
    assert not errors, errors[:10]
    assert ops["read"] and ops["walk"] and ops["usd"], ops
    assert max(latencies) < BOUND, max(latencies)
    assert stats["errors"] == 0, stats["last_error"]
    record(f"many_readers[{seconds}s]", {
        "processes": PROCESSES, "seconds": seconds, "wall_s": round(wall, 1), **summary(latencies),
        "ops_per_s": round(len(latencies) / wall, 1), "by_kind": dict(ops), "errors": len(errors),
        "daemon_errors": stats["errors"], "pvc_requests": stats["pvc_requests"],
        "cache_hit_ratio": stats["cache_hit_ratio"]})
