"""A render farm starting a job: many readers of one snapshot at once.

- In one mount, identical concurrent requests are coalesced: 64 processes
  opening the same cold file make one blob request and one manifest request.
- Against one service, hundreds of clients doing a snapshot mount's start
  (snapshot record, the closures it loads as of its pin, manifests, payloads) all at the same
  moment: no error, bounded p99, the same requests per client for everyone.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from prodfs.resolution.context import Context
from prodfs.resolution.snapshots import create_snapshot
from pvc_client import PVCClient
from tests.support.helpers import Publisher, file_tree, mounted, need_fuse
from tests.load.report import record, summary

PRIS = [f"spies:100:{n}-lgt:walter" for n in (10, 20, 30)]
BOUND = 20.0  # seconds: a p99 beyond this is not "holding"


def _publish(pvc: Publisher, tmp: Path) -> str:
    for i, pri in enumerate(PRIS):
        files = {"shot.usda": f"#usda 1.0\n# {pri}\n".encode(), "plate.exr": os.urandom(200_000 + i),
                 "cache/sim.bin": os.urandom(50_000 + i)}
        pvc.publish(pri, file_tree(tmp / f"src{i}", files))
    return pvc.run(lambda c: create_snapshot(c, Context(roots=tuple(PRIS))))["id"]


def _blob_gets(url: str) -> int:
    """Requests that downloaded payloads: one blob each, or a pack of them."""
    text = httpx.get(url + "/api/v1/metrics" if "/metrics" not in url else url).text
    found = re.findall(r'pvc_http_requests_total\{method="(?:GET|POST)",route="/api/v1/blobs/(?:\{sha256\}|batch/get)",'
                       r'status="200"\} (\d+)', text)
    return sum(int(n) for n in found)


def _open_at_once(path: str, go: Any, queue: Any) -> None:
    go.wait(60)
    try:
        with open(path, "rb") as f:
            queue.put(hashlib.sha256(f.read()).hexdigest())
    except OSError as exc:
        queue.put(f"error {exc}")


@pytest.mark.fuse
def test_identical_requests_are_coalesced(tmp_path: Path, pvc_url: str) -> None:
    need_fuse()
    pvc = Publisher(pvc_url)
    snap = _publish(pvc, tmp_path)
    expected = hashlib.sha256((tmp_path / "src0" / "plate.exr").read_bytes()).hexdigest()
    ctx = multiprocessing.get_context("fork")
    with mounted(tmp_path, pvc_url, "--snapshot", snap) as m:
        before = _blob_gets(pvc_url)
        go, queue = ctx.Event(), ctx.Queue()
        target = str(m / PRIS[0] / "plate.exr")
        procs = [ctx.Process(target=_open_at_once, args=(target, go, queue)) for _ in range(64)]
        for p in procs:
            p.start()
        go.set()
        got = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        stats = m.control("stats.json")
    assert got == [expected] * 64
    assert _blob_gets(pvc_url) - before == 1  # one download for 64 readers
    # the plate, with its small neighbour (shot.usda) in the same pack; its manifest, and the
    # snapshot's others in one request behind it (which may still be on its way)
    assert stats["blobs_fetched"] == 2 and 1 <= stats["manifest_requests"] <= 2, stats
    record("coalescing", {"readers": 64, "blob_requests": 1, "manifest_requests": stats["manifest_requests"],
                          "pvc_requests": stats["pvc_requests"]})


async def _farm(url: str, snap: str, clients: int) -> tuple[list[float], list[int], list[str], float]:
    latencies: list[float] = []
    per_client: list[int] = []
    errors: list[str] = []
    go = trio.Event()

    async def timed(coro: Any) -> Any:
        started = time.monotonic()
        try:
            return await coro
        finally:
            latencies.append(time.monotonic() - started)

    async def one() -> None:
        # the client retries as the daemon's does (a keep-alive connection the service closed
        # just as it was reused is repeated): an error is a request that failed for good
        async with PVCClient(url, max_connections=2, timeout=60) as c:
            await go.wait()
            try:
                doc = await timed(c.get_snapshot(snap))
                # what a snapshot mount loads: the closure of its roots, and its choices
                pin, record_ = doc["record"]["context"]["pin"], doc["record"]
                await timed(c.closure(record_["context"]["roots"], as_of=pin, missing="omit"))
                await timed(c.closure(sorted(record_["choices"]), as_of=pin, depth=0, missing="omit"))
                # its manifests at the first miss, in one request (a snapshot's companions)
                versions = await timed(c.get_versions(sorted(doc["record"]["choices"].items())))
                for pri, version in zip(sorted(doc["record"]["choices"]), versions):
                    for e in version["manifest"]:
                        if e["type"] == "file":
                            sink = io.BytesIO()
                            await timed(c.download_blob(e["sha256"], sink))
                            if hashlib.sha256(sink.getvalue()).hexdigest() != e["sha256"]:
                                errors.append(f"{pri}/{e['path']}: wrong bytes")
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(repr(exc))
            per_client.append(int(c.stats["requests"]))

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one)
        await trio.sleep(0.5)
        started = time.monotonic()
        go.set()
    return latencies, per_client, errors, time.monotonic() - started


@pytest.mark.parametrize("clients", [30, pytest.param(400, marks=pytest.mark.slow)])
def test_render_farm_start(tmp_path: Path, pvc_url: str, clients: int) -> None:
    snap = _publish(Publisher(pvc_url), tmp_path)
    latencies, per_client, errors, wall = trio.run(_farm, pvc_url, snap, clients)
    assert not errors, errors[:10]
    # every client needs: snapshot, two closures, the manifests' one, 9 payloads (more only if one was repeated)
    needed = 4 + len(PRIS) * 3
    assert len(per_client) == clients and min(per_client) == needed, sorted(set(per_client))
    figures = summary(latencies)
    assert figures["p99_ms"] < BOUND * 1000, figures
    record(f"render_farm[{clients} clients]", {"clients": clients, "requests_needed_per_client": needed,
                                               "requests_per_client_mean": round(sum(per_client) / clients, 3),
                                               "requests_per_client_max": max(per_client),
                                               "wall_s": round(wall, 2), **figures,
                                               "requests_per_s": round(len(latencies) / wall, 1)})
