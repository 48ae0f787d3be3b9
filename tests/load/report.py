"""Figures of a load run: latency percentiles, and where they are written for docs/reliability.md.

Set ``PRODFS_RELIABILITY_REPORT=FILE`` to collect every load test's figures
(one JSON object per line) when running the long versions.
"""

from __future__ import annotations

import json
import os
import time

__all__ = ["percentile", "summary", "record"]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(latencies: list[float]) -> dict[str, float]:
    return {"ops": len(latencies), "p50_ms": round(1000 * percentile(latencies, 50), 2),
            "p99_ms": round(1000 * percentile(latencies, 99), 2), "max_ms": round(1000 * max(latencies, default=0), 2)}


def record(test: str, figures: dict) -> None:
    print(f"\n{test}: {json.dumps(figures, sort_keys=True)}")
    path = os.environ.get("PRODFS_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **figures},
                               sort_keys=True) + "\n")
