"""The service's read requests timed against a store built by ``pvc import``.

    python -m bench.service_at_size --url http://127.0.0.1:PORT --products 100000 --seed 1 [--burst 500]

The store must be the one ``bench.gen_history --products N --seed S`` made
(the names are taken from the same layout, no request lists them). Each
request kind is timed alone, one request at a time, ``--reps`` times; then
``--burst`` first-lookup requests (``POST /closure`` of one distinct product,
``depth: 0``, ``missing: "omit"``) are sent at once over as many connections,
opened beforehand, as a farm's daemons would hold them. The burst's client
is a few lines of HTTP/1.1 over asyncio streams rather than httpx, so that
the figures are the service's and not the load generator's (both share the
machine's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from bench.gen_history import layout

__all__ = ["main"]


class _Connection:
    """One kept-alive HTTP/1.1 connection: send a request, read the whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: application/json\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        self.writer.write(head.encode() + data)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def _timed(conn: _Connection, method: str, path: str, body: Any = None) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, data = await conn.request(method, path, body)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise SystemExit(f"{method} {path}: HTTP {status}: {data[:300]!r}")
    return elapsed, data


async def _series(conn: _Connection, reps: int, method: str, make: Any) -> dict[str, Any]:
    times = []
    size = 0
    for i in range(reps):
        path, body = make(i)
        elapsed, data = await _timed(conn, method, path, body)
        times.append(elapsed * 1000)
        size = len(data)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2),
            "bytes": size, "reps": reps}


async def run(url: str, products: int, seed: int, reps: int, burst: int, skip_index: bool) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    api = "/api/v1"
    names = [pri for pri, _ in layout(products, random.Random(seed))]
    rng = random.Random(7)
    shots = [n for n in names if n.endswith("-lgt")]
    conn = await _Connection.open(host, port)
    out: dict[str, Any] = {"products": len(names)}
    try:
        def first_lookup(_: int) -> tuple[str, Any]:
            return f"{api}/closure", {"roots": [rng.choice(names)], "depth": 0, "missing": "omit"}

        def workspace(_: int) -> tuple[str, Any]:
            start = rng.randrange(len(shots) - 100)
            return f"{api}/closure", {"roots": shots[start:start + 100]}

        def page(kind: str, limit: int) -> Any:
            def make(_: int) -> tuple[str, Any]:
                after = names[rng.randrange(len(names))]
                return f"{api}/{kind}?{urlencode({'after': after, 'limit': limit})}", None
            return make

        def version(_: int) -> tuple[str, Any]:
            return f"{api}/products/{quote(rng.choice(names), safe=':@')}/versions/latest", None

        await _timed(conn, "GET", f"{api}/health")
        if reps == 0:
            out["burst"] = await _burst(host, port, api, rng.sample(names, burst))
            return out
        out["closure_depth0"] = await _series(conn, reps, "POST", first_lookup)
        out["closure_100_shots"] = await _series(conn, reps, "POST", workspace)
        out["products_page_1000"] = await _series(conn, reps, "GET", page("products", 1000))
        if not skip_index:
            out["index_page_1000"] = await _series(conn, reps, "GET", page("index", 1000))
        out["version_latest"] = await _series(conn, reps, "GET", version)
        if burst:
            out["burst"] = await _burst(host, port, api, rng.sample(names, burst))
    finally:
        conn.close()
    return out


async def _burst(host: str, port: int, api: str, roots: list[str]) -> dict[str, Any]:
    conns = await asyncio.gather(*(_Connection.open(host, port) for _ in roots))
    # one request on each first: the connections are warm, as a farm's would be
    await asyncio.gather(*(c.request("GET", f"{api}/health") for c in conns))
    gate = asyncio.Event()

    async def one(conn: _Connection, root: str) -> float:
        await gate.wait()
        elapsed, data = await _timed(conn, "POST", f"{api}/closure",
                                     {"roots": [root], "depth": 0, "missing": "omit"})
        if root not in json.loads(data)["products"]:
            raise SystemExit(f"{root} missing from its own closure")
        return elapsed * 1000

    tasks = [asyncio.create_task(one(c, r)) for c, r in zip(conns, roots)]
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    gate.set()
    times = await asyncio.gather(*tasks)
    wall = time.perf_counter() - started
    for c in conns:
        c.close()
    return {"requests": len(times), "p50_ms": round(_percentile(times, 50), 1),
            "p99_ms": round(_percentile(times, 99), 1), "max_ms": round(max(times), 1),
            "wall_s": round(wall, 3), "per_second": round(len(times) / wall)}


def main(args: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.service_at_size", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8750")
    p.add_argument("--products", type=int, required=True, help="as given to bench.gen_history")
    p.add_argument("--seed", type=int, default=1, help="as given to bench.gen_history")
    p.add_argument("--reps", type=int, default=20, help="requests per kind timed alone (0: the burst only)")
    p.add_argument("--burst", type=int, default=500, help="concurrent first lookups (0: none)")
    p.add_argument("--skip-index", action="store_true", help="no /index pages (a service without paging "
                   "answers the whole store to each)")
    ns = p.parse_args(args)
    result = asyncio.run(run(ns.url, ns.products, ns.seed, ns.reps, ns.burst, ns.skip_index))
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
