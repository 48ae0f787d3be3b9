"""Running the measurements: every target in every repetition, interleaved.

Repetition r runs each measurement on every target, the targets' order
rotated by r, so that a slow spell of a shared machine spreads over all of
them instead of landing on one. A failed sample is recorded with its error
and the run goes on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from . import _measure
from ._measure import Measure
from ._system import can_drop_caches, drop_caches
from ._targets import ProdFS, Target
from ._tree import Dataset

__all__ = ["run_measures", "pvc_requests", "summarize", "applicable", "rss_bytes"]

Log = Callable[[str], None]


def applicable(m: Measure, ds: Dataset) -> str | None:
    """Why a measurement cannot run on this dataset, or None."""
    if m.fn in (_measure.seq_read, _measure.random_4k) and not ds.big_files:
        return "no large file in the tree"
    if m.fn is _measure.usd_open:
        if ds.usd_layer is None:
            return "no demo show in the tree"
        try:
            import pxr  # noqa: F401
        except ImportError:
            return "usd-core is not installed"
    return None


def _prepare(kind: str, t: Target, drop: bool) -> None:
    if kind == "cold":
        t.fresh()
        if drop:
            drop_caches(3)
    elif kind == "fresh":
        t.fresh()
    elif kind == "lookup":
        t.fresh()
        if drop:
            drop_caches(2)


def run_measures(targets: list[Target], ds: Dataset, measures: list[Measure], reps: int,
                 log: Log, *, drop: bool = True) -> tuple[dict, list[dict], dict[str, str]]:
    """Return ({figure: {target: [samples]}}, errors, {measure: why skipped})."""
    drop = drop and can_drop_caches()
    samples: dict[str, dict[str, list[float]]] = {}
    errors: list[dict] = []
    skipped: dict[str, str] = {}
    todo = []
    for m in measures:
        why = applicable(m, ds)
        if why:
            skipped[m.name] = why
            continue
        todo.append(m)
        for fig in m.keys:
            samples[fig] = {t.name: [] for t in targets if t.warm or m.prepare != "warm"}
    for rep in range(reps):
        started = time.monotonic()
        for m in todo:
            k = rep % len(targets)
            for t in targets[k:] + targets[:k]:
                if m.prepare == "warm" and not t.warm:
                    continue
                try:
                    _prepare(m.prepare, t, drop)
                    if m.prepare == "warm":
                        m.fn(t, ds)
                    figures = m.fn(t, ds)
                except Exception as exc:  # noqa: BLE001 - one bad sample must not end the run
                    errors.append({"measure": m.name, "target": t.name, "rep": rep, "error": f"{exc!r}"[:500]})
                    log(f"  {m.name} on {t.name}: {exc!r}"[:300])
                    continue
                values = list(figures.values())
                for fig, value in zip(m.keys, values if m.figures else values[:1]):
                    samples[fig][t.name].append(value)
        log(f"repetition {rep + 1}/{reps} done in {time.monotonic() - started:.0f}s")
    for t in targets:  # leave every mount up and warm for what follows
        t.start()
    return samples, errors, skipped


def summarize(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    med = statistics.median(values)
    out = {"median": med, "min": min(values), "max": max(values), "n": len(values), "samples": values}
    # spread: half the range, relative to the median (what a reader needs to judge a 10% difference)
    out["spread_pct"] = round(100 * (max(values) - min(values)) / 2 / med, 1) if med else None
    return out


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def pvc_requests(targets: list[Target], ds: Dataset, log: Log) -> dict:
    """PVC requests made while opening 1,000 small files on a fresh mount, by mode."""
    files = _measure.small_sample(ds)
    out = {}
    for t in targets:
        if not isinstance(t, ProdFS):
            continue
        t.fresh()
        before = t.control("stats.json")
        _measure._read_all([str(t.root / p) for p in files])
        after = t.control("stats.json")
        scale = 1000 / len(files)
        delta = {k: (after.get(k) or 0) - (before.get(k) or 0)
                 for k in ("pvc_requests", "manifests_fetched", "manifest_requests", "blobs_fetched", "reads", "opens")}
        out[t.name] = {
            "opens": len(files),
            "pvc_requests_per_1000_opens": round(delta["pvc_requests"] * scale, 1),
            "manifests_fetched_per_1000_opens": round(delta["manifests_fetched"] * scale, 1),
            "manifest_requests_per_1000_opens": round(delta["manifest_requests"] * scale, 1),
            "blobs_fetched_per_1000_opens": round(delta["blobs_fetched"] * scale, 1),
            "raw": delta,
        }
        log(f"  {t.name}: {out[t.name]['pvc_requests_per_1000_opens']} PVC requests per 1,000 opens")
    return out


def daemon_rss(targets: list[Target]) -> dict:
    return {t.name: rss_bytes(t.pid()) for t in targets if isinstance(t, ProdFS) and t.pid()}
