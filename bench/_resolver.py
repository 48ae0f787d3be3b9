"""The resolver alone: ``bench_resolver.py`` in its own process, its table read back.

A process of its own keeps the large generated graphs out of the harness
(and out of the parallel readers it forks).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["run_resolver"]

SCRIPT = Path(__file__).with_name("bench_resolver.py")


def run_resolver(sizes: list[int], strategies: list[str], repeat: int) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--products", *map(str, sizes), "--strategies", *strategies,
           "--repeat", str(repeat)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    out: dict = {"command": " ".join(["python", "bench/bench_resolver.py", *cmd[2:]]), "rows": []}
    if res.returncode != 0:
        out["error"] = res.stderr.strip()[-1000:]
        return out
    for line in res.stdout.splitlines():
        cols = line.split()
        # rows: products strategy seconds cpu in-graph conflicts errors since decided (the header is not numeric)
        if len(cols) >= 4 and cols[0].isdigit():
            try:
                row = {"products": int(cols[0]), "strategy": cols[1], "seconds": float(cols[2]),
                       "cpu_seconds": float(cols[3])}
            except ValueError:
                continue
            if len(cols) >= 7:
                row.update(in_graph=int(cols[4]), conflicts=int(cols[5]), errors=int(cols[6]))
            if len(cols) >= 9:  # resolving again after one product's new version
                row.update(since_seconds=float(cols[7]), since_decided=int(cols[8]))
            out["rows"].append(row)
    if not out["rows"]:
        out["error"] = "bench_resolver.py printed no result row:\n" + res.stdout[-1000:]
    return out
