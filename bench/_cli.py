"""``python -m bench run``: ProdFS side by side with native disk, bindfs and squashfuse.

(``python -m bench scale`` is the other command: a mount on a big store, bench/_scale.py.)

Builds the tree, publishes it to a PVC service on loopback, mounts every
target, runs every measurement on every target interleaved, then the
resolver alone and the daemon's memory, and writes
``OUT/<date>.json`` and ``OUT/<date>.md``. See docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import typer

from ._scale_store import DEFAULT_STORE_DIR
from ._system import BenchError

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False, no_args_is_help=True)
_T0 = time.monotonic()

NOISE_NOTE = (
    "Noise: figures are medians of interleaved repetitions on a shared machine; the spread (± half the "
    "range) says how far one repetition strayed. A difference smaller than the spreads is not a result."
)


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


@app.callback()
def _root() -> None:
    """ProdFS benchmarks."""


@app.command()
def run(
    scale: int = typer.Option(1, "--scale", min=1, help="multiply the products: 10 and 100 for 10x and 100x"),
    reps: int = typer.Option(5, "--reps", min=1, help="repetitions of every measurement on every target"),
    workdir: Path | None = typer.Option(None, "--workdir", help="where trees, images, caches and mounts go "
                                        "(default: a temporary directory, removed at the end)"),
    keep: bool = typer.Option(False, "--keep", help="keep the temporary work directory"),
    reuse: bool = typer.Option(False, "--reuse", help="measure again over a --workdir a previous run built "
                               "(its service data, plain directory, image and caches)"),
    out: Path = typer.Option(ROOT / "bench" / "results", "--out", help="where the JSON and markdown go"),
    stem: str | None = typer.Option(None, "--name", help="file name of the results (default: the date)"),
    measure: list[str] = typer.Option([], "--measure", help="only these measurements (repeatable)"),
    modes: list[str] = typer.Option(["snapshot", "live", "empty"], "--mode", help="ProdFS modes (repeatable)"),
    products: int = typer.Option(100, "--products", min=1, help="products of small files (before --scale)"),
    files: int = typer.Option(100, "--files", min=1, help="small files per product"),
    file_size: int = typer.Option(4096, "--file-size", min=1, help="bytes per small file"),
    big_files: int = typer.Option(2, "--big-files", min=0, help="large files"),
    big_mib: int = typer.Option(256, "--big-mib", min=1, help="MiB per large file"),
    demo: bool = typer.Option(True, "--demo/--no-demo", help="publish the demo USD show too"),
    resolver_sizes: list[int] = typer.Option([1000, 10000, 100000], "--resolver-products",
                                             help="graph sizes for the resolver alone (repeatable)"),
    resolver: bool = typer.Option(True, "--resolver/--no-resolver"),
    memory_steps: list[int] = typer.Option([100_000, 1_000_000], "--memory-files",
                                           help="files served before each memory reading (repeatable)"),
    memory_per_product: int = typer.Option(1000, "--memory-per-product", min=1),
    memory: bool = typer.Option(True, "--memory/--no-memory"),
    transfers: bool = typer.Option(True, "--transfers/--no-transfers",
                                   help="publish and prefetch of the whole tree beside tar"),
    drop: bool = typer.Option(True, "--drop-caches/--no-drop-caches",
                              help="drop the page cache for cold samples (needs root)"),
) -> None:
    """Run the whole benchmark and write OUT/<date>.json and OUT/<date>.md."""
    from ._measure import by_name
    from ._targets import PRODFS_MODES
    from ._tree import TreeSpec

    bad = [m for m in modes if m not in PRODFS_MODES]
    if bad:
        raise typer.BadParameter(f"unknown mode(s) {', '.join(bad)}; known: {', '.join(PRODFS_MODES)}",
                                 param_hint="--mode")
    try:
        measures = by_name(measure)
    except BenchError as exc:
        raise typer.BadParameter(str(exc), param_hint="--measure") from None
    spec = TreeSpec.scaled(scale, products=products, files=files, file_size=file_size, big_files=big_files,
                           big_size=big_mib << 20, demo=demo)
    tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="prodfs-bench-")) if tmp else workdir.resolve()  # type: ignore[union-attr]
    try:
        work.mkdir(parents=True, exist_ok=True)
        if reuse and not (work / "dataset.json").exists():
            raise BenchError(f"--reuse: {work} holds no dataset of a previous run")
        if not reuse and any(work.iterdir()):
            raise BenchError(f"work directory {work} is not empty (--reuse measures again over it)")
        doc = _run(work, spec, measures, modes, reps, resolver_sizes if resolver else [],
                   memory_steps if memory else [], memory_per_product, drop, reuse, transfers)
        doc["command"] = "python -m bench " + shlex.join(sys.argv[1:])
        doc["scale"] = scale
        from ._report import write

        js, md = write(doc, out, stem or doc["date"])
    except BenchError as exc:
        typer.echo(f"bench: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if tmp and not keep:
            shutil.rmtree(work, ignore_errors=True)
        elif tmp:
            log(f"work directory kept: {work}")
    missed = [c for c in doc["target_checks"] if c["met"] is False]
    met = [c for c in doc["target_checks"] if c["met"]]
    typer.echo(f"results: {js} and {md}")
    typer.echo(f"targets: {len(met)} met, {len(missed)} missed, "
               f"{len(doc['target_checks']) - len(met) - len(missed)} not measured")


def _run(work: Path, spec, measures, modes: list[str], reps: int, resolver_sizes: list[int],  # noqa: ANN001
         memory_steps: list[int], memory_per_product: int, drop: bool, reuse: bool, transfers: bool) -> dict:
    from tests.support.service import running_service

    from . import _run as runner
    from ._memory import measure_memory
    from ._resolver import run_resolver
    from ._report import build_document
    from ._system import can_drop_caches, ensure_tools, machine
    from ._targets import Bindfs, Native, ProdFS, Squashfuse
    from ._tree import Dataset, build_and_publish, make_squashfs

    ensure_tools(log)
    started = dt.datetime.now(dt.timezone.utc)
    doc: dict = {"date": started.strftime("%Y-%m-%d"), "started": started.isoformat(), "reps": reps,
                 "machine": machine(), "notes": [NOISE_NOTE]}
    drop = drop and can_drop_caches()
    if not drop:
        doc["notes"].append("The page cache was not dropped (not root, or --no-drop-caches): the cold figures "
                            "are fresh mounts over a warm page cache.")
    mnt = work / "mnt"
    with running_service(work / "pvc") as svc:
        log(f"PVC service at {svc.url}")
        if reuse:
            ds = Dataset.load(work / "dataset.json")
            log(f"reusing the tree of {work} ({len(ds.small_files)} small files)")
        else:
            ds = build_and_publish(svc.url, work, spec, log)
            shutil.rmtree(work / "src", ignore_errors=True)  # published: the store and the plain directory hold it
            ds.image = work / "tree.sqsh"
            ds.compression = make_squashfs(ds.native, ds.image)
            ds.save(work / "dataset.json")
        image = ds.image
        assert image is not None
        doc["squashfs_compression"] = ds.compression
        log(f"squashfs image: {image.stat().st_size >> 20} MiB ({ds.compression})")
        targets = [Native(ds.native), Bindfs(mnt / "bindfs", ds.native), Squashfuse(mnt / "squashfuse", image)]
        for mode in modes:
            targets.append(ProdFS(mode, mnt / f"prodfs-{mode}", work / f"cache-{mode}", work / f"prodfs-{mode}.log",
                                  svc.url, ds.snapshot_id, roots=sorted(ds.choices)))
        try:
            for t in targets:
                if isinstance(t, ProdFS) and t.warm:
                    # the live context chooses what the snapshot froze: one prefetch fills either cache
                    report = t.prefetch()
                    log(f"{t.name}: prefetched {report['blobs']} payloads, {report['bytes'] >> 20} MiB")
                t.start()
            log("warming every target up (a first read of everything)")
            for t in targets:
                if t.warm:
                    _warm_up(t, ds)
            log(f"measuring {len(measures)} measurements x {len(targets)} targets x {reps} repetitions")
            samples, errors, skipped = runner.run_measures(targets, ds, measures, reps, log, drop=drop)
            log("PVC requests per 1,000 opens")
            doc["pvc_requests"] = runner.pvc_requests(targets, ds, log)
            doc["daemon_rss"] = runner.daemon_rss(targets)
        finally:
            for t in reversed(targets):
                try:
                    t.stop()
                except Exception as exc:  # noqa: BLE001 - stop the others all the same
                    log(f"cannot stop {t.name}: {exc}")
        if transfers:
            from ._transfer import measure_transfers

            log("publish and prefetch of the tree beside tar")
            doc["transfers"] = measure_transfers(work, ds, svc.url, min(reps, 3), drop, log)
        logs = {t.name: _log_problems(t.log) for t in targets if isinstance(t, ProdFS)}
        doc["daemon_log_problems"] = {k: v for k, v in logs.items() if v}
    doc.update(samples=samples, errors=errors, skipped=skipped, dataset=ds.to_json(),
               targets=[t.to_json() for t in targets])
    if resolver_sizes:
        log(f"resolver alone on {', '.join(map(str, resolver_sizes))} products")
        doc["resolver"] = run_resolver(resolver_sizes, ["latest"], 3)
    if memory_steps:
        doc["memory"] = measure_memory(work, memory_steps, memory_per_product, log)
    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    return build_document(**doc)


def _warm_up(t, ds) -> None:  # noqa: ANN001
    from ._measure import _read_all

    _read_all([str(t.root / p) for p in ds.small_files + ds.big_files])


def _log_problems(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if "Traceback" in line or "ERROR" in line][:20]


@app.command()
def scale(
    db: str = typer.Option("sqlite", "--db", help="the store's database: sqlite or postgresql (a throwaway local "
                           "server, scripts/pg-test-server.sh, stopped at the end)"),
    products: int = typer.Option(1_000_000, "--products", min=1, help="products of the generated history"),
    versions: int = typer.Option(3, "--versions-per-product", min=1),
    files: int = typer.Option(2, "--files", min=0, help="files per version (gen_history --files)"),
    seed: int = typer.Option(0, "--seed", help="gen_history --seed (and the seed of the sampled names)"),
    store_dir: Path = typer.Option(DEFAULT_STORE_DIR, "--store-dir",
                                   help="where stores are built and reused, one directory per database and "
                                   "generator arguments (outside the repository)"),
    out: Path = typer.Option(ROOT / "bench" / "results", "--out", help="where the JSON and markdown go"),
    stem: str | None = typer.Option(None, "--name", help="file name of the results "
                                    "(default: scale-DATE-PRODUCTS-DB)"),
    lookups: int = typer.Option(500, "--lookups", min=1, help="versionless names looked up for the first time"),
    publish_reps: int = typer.Option(5, "--publish-reps", min=1, help="publishes watched from the live mount"),
    closure: int = typer.Option(10_000, "--closure-products", min=1, help="the workspace's closure, about"),
    concurrency: int = typer.Option(500, "--concurrency", min=1, help="requests sent to the service at once"),
    rounds: int = typer.Option(3, "--rounds", min=1, help="measured rounds of concurrent requests"),
    client_procs: int = typer.Option(1, "--client-procs", min=1, help="client processes sharing those requests"),
    mount_timeout: float = typer.Option(120.0, "--mount-timeout", min=1, help="cap of each mount attempt, s"),
    build_timeout: float = typer.Option(7200.0, "--build-timeout", min=1, help="cap of building the store, s"),
    workdir: Path | None = typer.Option(None, "--workdir", help="mounts, caches and logs (default: a temporary "
                                        "directory, removed at the end)"),
    keep: bool = typer.Option(False, "--keep", help="keep the temporary work directory (the daemons' logs)"),
) -> None:
    """What a mount costs on a big store (issue #17): write OUT/scale-....json and .md."""
    from ._scale import ScaleOptions, run_scale
    from ._scale_report import write
    from ._scale_store import GeneratorArgs, check_outside_repository

    if db not in ("sqlite", "postgresql"):
        raise typer.BadParameter(f"{db!r}: sqlite or postgresql", param_hint="--db")
    if client_procs > concurrency:
        raise typer.BadParameter("more client processes than requests", param_hint="--client-procs")
    try:
        store_dir = check_outside_repository(store_dir)
    except BenchError as exc:
        raise typer.BadParameter(str(exc), param_hint="--store-dir") from None
    opts = ScaleOptions(db=db, args=GeneratorArgs(products, versions, files, seed), store_dir=store_dir,
                        lookups=lookups, publish_reps=publish_reps, closure_products=closure,
                        concurrency=concurrency, rounds=rounds, client_procs=client_procs,
                        mount_timeout=mount_timeout, build_timeout=build_timeout, workdir=workdir, keep=keep)
    doc = run_scale(opts, log)
    doc["command"] = "python -m bench " + shlex.join(sys.argv[1:])
    js, md = write(doc, out, stem or f"scale-{doc['date']}-{_short(products)}-{db}")
    rows = doc["target_checks"]
    typer.echo(f"results: {js} and {md}")
    typer.echo(f"targets: {sum(r['met'] is True for r in rows)} met, {sum(r['met'] is False for r in rows)} not met, "
               f"{sum(r['met'] is None for r in rows)} without a verdict")


def _short(n: int) -> str:
    """1000000 -> 1m, 100000 -> 100k, 2500 -> 2500."""
    for size, suffix in ((1_000_000, "m"), (1000, "k")):
        if n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="python -m bench", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
