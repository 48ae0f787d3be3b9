"""Time the resolver on generated layered graphs with diamonds.

    python bench/bench_resolver.py --products 1000 10000 100000

Prints, per size and strategy, the best of ``--repeat`` runs of `resolve`
in wall-clock seconds and in CPU seconds of this process (the second is the
steadier figure on a shared machine; graph generation is not timed), and how
many products, conflicts and errors the workspace graph had. The generator is tests/resolver/graphgen.py, loaded by
path so that the tests and the benchmark share one copy.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prodfs.resolution.context import Context  # noqa: E402
from prodfs.resolution.graph import VersionInfo  # noqa: E402
from prodfs.resolution.resolver import resolve, resolve_since  # noqa: E402


def _load_graphgen():  # type: ignore[no-untyped-def]
    path = ROOT / "tests" / "resolver" / "graphgen.py"
    spec = importlib.util.spec_from_file_location("prodfs_bench_graphgen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _since(graph, res, seed: int, changes: int = 20) -> tuple[float, int]:  # noqa: ANN001
    """Median seconds and products decided of `resolve_since` after a new version of one
    product of the graph (its newest's dependencies again), for a seeded sample of them.

    The graph is changed in place and each version taken back after, so the
    next strategy resolves the same graph.
    """
    import random
    import statistics

    rnd = random.Random(seed)
    times, decided = [], []
    for pri in rnd.sample(sorted(res.choices), min(changes, len(res.choices))):
        product = graph.products[pri]
        newest = max(product.versions.values(), key=lambda v: v.number)
        number = newest.number + 1
        product.versions[number] = VersionInfo(number, newest.created_us + 1, newest.dependencies)
        t0 = time.perf_counter()
        out = resolve_since(res, graph, {pri})
        times.append(time.perf_counter() - t0)
        decided.append(out.decided or 0)
        del product.versions[number]
    return (statistics.median(times), int(statistics.median(decided))) if times else (0.0, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--strategies", nargs="+", default=["latest", "highest", "lowest", "nearest", "strict"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pin", action="store_true", help="also pin the context half way through time")
    ap.add_argument("--profile", action="store_true", help="profile one run of the largest size")
    args = ap.parse_args(argv)
    gg = _load_graphgen()
    print(f"{'products':>9} {'strategy':>8} {'seconds':>8} {'cpu':>7} {'in graph':>9} {'conflicts':>9} "
          f"{'errors':>6} {'since':>8} {'decided':>7}")
    for n in args.products:
        spec = gg.GenSpec(products=n, seed=args.seed)
        graph, roots = gg.layered_graph(spec)
        pin = spec.span_us // 2 if args.pin else None
        for name in args.strategies:
            ctx = Context(roots=tuple(roots), strategy=name, pin_us=pin, prefer=("approved",))
            best = cpu = float("inf")
            res = None
            for _ in range(args.repeat):
                res = None  # free the previous result outside the timed part
                t0, c0 = time.perf_counter(), time.process_time()
                res = resolve(graph, ctx)
                best = min(best, time.perf_counter() - t0)
                cpu = min(cpu, time.process_time() - c0)
            assert res is not None
            since, decided = _since(graph, res, args.seed)
            print(f"{n:>9} {name:>8} {best:>8.3f} {cpu:>7.3f} {len(res.choices):>9} {len(res.conflicts):>9} "
                  f"{len(res.errors):>6} {since:>8.4f} {decided:>7}", flush=True)
    if args.profile:
        n = max(args.products)
        graph, roots = gg.layered_graph(gg.GenSpec(products=n, seed=args.seed))
        ctx = Context(roots=tuple(roots), strategy=args.strategies[0], prefer=("approved",))
        prof = cProfile.Profile()
        prof.runcall(resolve, graph, ctx)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
