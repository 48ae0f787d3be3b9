"""The benchmark's data: built once, published to PVC, and laid out for every peer.

One resolution is the reference: a snapshot of every product at the version an
unrooted context chooses. The plain directory (native, and under bindfs and
squashfuse) is that snapshot materialized from PVC, so every mount serves the
same bytes under the same paths (``ROOT/<PRI>/...``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from prodfs.resolution.context import Context
from prodfs.resolution.graph import Graph
from prodfs.resolution.resolver import resolve
from prodfs.resolution.snapshots import snapshot_record
from pvc_client import PVCClient, format_time, from_micros, to_micros, utcnow

__all__ = ["TreeSpec", "Dataset", "build_and_publish", "make_squashfs", "small_pri", "BIG_PRI"]

BIG_PRI = "bench:big-payload"
_CONCURRENCY = 4


def small_pri(i: int) -> str:
    return f"bench:p{i:05d}-files"


@dataclass(frozen=True)
class TreeSpec:
    """What to build: ``products`` x ``files`` small files, ``big_files`` large ones, the demo show."""

    products: int = 100
    files: int = 100
    file_size: int = 4096
    big_files: int = 2
    big_size: int = 256 << 20
    demo: bool = True
    demo_scale: int = 1

    @classmethod
    def scaled(cls, scale: int, **overrides: Any) -> TreeSpec:
        """``--scale`` multiplies the products (10x: 1,000 products, 100,000 small files)."""
        base = cls(**overrides)
        return cls(**{**asdict(base), "products": base.products * scale})

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    """What a run measures: names and paths relative to any mount root."""

    spec: TreeSpec
    snapshot_id: str
    choices: dict[str, int]
    small_files: list[str]  # "PRI/f000.dat", product-major order
    big_files: list[str]
    usd_layer: str | None  # "PRI/walter.usda" of the demo shot, or None without the demo
    versionless: list[str]  # every product's versionless name (the lookup sample)
    native: Path
    image: Path | None = None
    compression: str | None = None

    def to_json(self) -> dict:
        return {"spec": self.spec.to_json(), "snapshot": self.snapshot_id, "products": len(self.choices),
                "small_files": len(self.small_files), "big_files": len(self.big_files),
                "usd_layer": self.usd_layer}

    def save(self, path: Path) -> None:
        """Everything needed to measure again over the same work directory (``--reuse``)."""
        doc = {"spec": self.spec.to_json(), "snapshot_id": self.snapshot_id, "choices": self.choices,
               "small_files": self.small_files, "big_files": self.big_files, "usd_layer": self.usd_layer,
               "versionless": self.versionless, "native": str(self.native),
               "image": str(self.image) if self.image else None, "compression": self.compression}
        path.write_text(json.dumps(doc))

    @classmethod
    def load(cls, path: Path) -> Dataset:
        d = json.loads(path.read_text())
        return cls(TreeSpec(**d["spec"]), d["snapshot_id"], d["choices"], d["small_files"], d["big_files"],
                   d["usd_layer"], d["versionless"], Path(d["native"]), Path(d["image"]) if d["image"] else None,
                   d.get("compression"))


def _write_small(root: Path, spec: TreeSpec) -> None:
    # Distinct content in every file: no store, cache or image can dedup its
    # way to a better figure than the native disk gets.
    rng = random.Random(7)
    for p in range(spec.products):
        d = root / small_pri(p)
        d.mkdir(parents=True, exist_ok=True)
        for f in range(spec.files):
            (d / f"f{f:03d}.dat").write_bytes(rng.randbytes(spec.file_size))


def _write_big(root: Path, spec: TreeSpec) -> None:
    d = root / BIG_PRI
    d.mkdir(parents=True, exist_ok=True)
    chunk = 8 << 20
    for i in range(spec.big_files):
        with open(d / f"big{i}.bin", "wb") as f:
            left = spec.big_size
            while left > 0:
                n = min(chunk, left)
                f.write(os.urandom(n))
                left -= n


async def _limited(jobs: list[Callable[[], Awaitable[Any]]], limit: int = _CONCURRENCY) -> None:
    sem = trio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            await job()

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, job)


async def _publish(client: PVCClient, src: Path, spec: TreeSpec, log) -> str | None:  # noqa: ANN001
    names = [small_pri(p) for p in range(spec.products)] + ([BIG_PRI] if spec.big_files else [])
    await _limited([lambda n=n: client.publish_directory(n, src / n, labels=["published"]) for n in names])
    log(f"published {len(names)} products")
    if not spec.demo:
        return None
    from prodfs_demo import build, default_start, publish

    plan = build(src.parent / "demo-src", start=default_start(), scale=spec.demo_scale)
    show = await publish(client, plan)
    log(f"published the demo show ({len(show.products)} products)")
    lgt = "spies:100:10-lgt:walter"
    return f"{lgt}/{show.products[lgt].layer}"


async def _snapshot(client: PVCClient) -> tuple[str, dict[str, int]]:
    """Freeze what an unrooted context serves now, for every product."""
    ctx = Context(roots=(), strategy="latest", pin_us=to_micros(utcnow()))
    graph = Graph.from_json(await client.index(as_of=format_time(from_micros(ctx.pin_us))))  # every product
    resolution = resolve(graph, ctx)
    every = {}
    for product in graph:
        choice = resolution.choose(product.pri)
        if choice is not None and choice.number is not None:
            every[product.pri] = choice.number
    record = snapshot_record(resolution, ctx, extra_names=every)
    answer = await client.create_snapshot(record)
    return answer["id"], dict(answer["record"]["choices"])


async def _materialize(client: PVCClient, choices: dict[str, int], native: Path) -> None:
    native.mkdir(parents=True, exist_ok=True)
    await _limited([lambda p=p, n=n: client.materialize(f"{p}@{n}", native / p) for p, n in choices.items()])


def build_and_publish(url: str, workdir: Path, spec: TreeSpec, log) -> Dataset:  # noqa: ANN001
    """Build the tree under ``workdir/src``, publish it, snapshot it, materialize it to ``workdir/native``."""
    src = workdir / "src"
    _write_small(src, spec)
    if spec.big_files:
        _write_big(src, spec)
    log(f"built {spec.products} x {spec.files} files of {spec.file_size} bytes, "
        f"{spec.big_files} x {spec.big_size >> 20} MiB")

    async def go() -> tuple[str | None, str, dict[str, int]]:
        async with PVCClient(url, timeout=120.0) as client:
            layer = await _publish(client, src, spec, log)
            snap_id, choices = await _snapshot(client)
            await _materialize(client, choices, workdir / "native")
            return layer, snap_id, choices

    layer, snap_id, choices = trio.run(go)
    log(f"snapshot {snap_id} ({len(choices)} products) materialized into {workdir / 'native'}")
    small = [f"{small_pri(p)}/f{f:03d}.dat" for p in range(spec.products) for f in range(spec.files)]
    big = [f"{BIG_PRI}/big{i}.bin" for i in range(spec.big_files)]
    return Dataset(spec, snap_id, choices, small, big, layer, sorted(choices), workdir / "native")


def make_squashfs(native: Path, image: Path) -> str:
    """Pack the plain directory the way farms ship read-only trees; return the compressor used."""
    comp = "zstd"
    cmd = ["mksquashfs", str(native), str(image), "-noappend", "-quiet", "-no-progress", "-comp", comp]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:  # an mksquashfs without zstd: its default
        comp = "gzip"
        res = subprocess.run(cmd[:-2], capture_output=True, text=True)
        if res.returncode != 0:
            from ._system import BenchError

            raise BenchError(f"mksquashfs failed: {res.stderr.strip()[-500:]}")
    return comp
