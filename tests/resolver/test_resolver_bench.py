"""The seeded graph generator, and the benchmark script on a small size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prodfs.resolution.context import Context
from prodfs.resolution.resolver import resolve
from tests.resolver.graphgen import GenSpec, layered_graph
from tests.resolver.rgraphs import STRATEGIES, reach

REPO = Path(__file__).resolve().parents[2]


def test_generator_is_seeded_and_makes_diamonds() -> None:
    g1, roots1 = layered_graph(GenSpec(products=800, seed=3))
    g2, roots2 = layered_graph(GenSpec(products=800, seed=3))
    g3, _ = layered_graph(GenSpec(products=800, seed=4))
    assert len(g1) == 800 and roots1 == roots2
    for strategy in STRATEGIES:
        ctx = Context(roots=tuple(roots1), strategy=strategy, prefer=("approved",))
        res = resolve(g1, ctx)
        assert res.to_json() == resolve(g2, ctx).to_json()
        assert res.conflicts and res.errors == []
        assert set(res.choices) == set(reach(g1, res))
    assert resolve(g3, ctx).to_json() != res.to_json()


def test_bench_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_resolver.py"), "--products", "300", "--repeat", "1", "--pin"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[:2] for r in rows] == [["300", s] for s in STRATEGIES]
    assert all(int(r[4]) > 0 for r in rows)  # products in the graph
