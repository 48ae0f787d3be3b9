"""``prodfs snapshot``, ``prodfs prefetch`` and ``prodfs diff``: the context commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import trio

from pvc_client import PVCClient, PVCError, parse_time, to_micros

from ._mounts import QuietError, get_control_xattr, read_control
from ._output import add_command, answer

__all__ = ["cmd_snapshot", "cmd_prefetch", "cmd_diff", "add_parsers"]


def _client(url: str) -> PVCClient:
    return PVCClient(url, token=os.environ.get("PVC_TOKEN"))


def _run(fn, *args):
    try:
        return trio.run(fn, *args)
    except PVCError as exc:
        raise QuietError(f"PVC: {exc}", 4) from None


def cmd_snapshot(opts: argparse.Namespace) -> int:
    def human(doc: dict) -> None:
        print(f"{len(doc['record']['choices'])} products, pinned {doc['record']['context']['pin']}", file=sys.stderr)
        print(doc["id"])

    return answer(opts, get_control_xattr(os.path.abspath(opts.mountpoint), "user.prodfs.snapshot", timeout=60), human)


def cmd_prefetch(opts: argparse.Namespace) -> int:
    from prodfs.mount.options import default_cache_dir
    from prodfs.storage import prefetch
    from pvc_client.progress import transfer_progress

    url, cache_dir, snap_id = opts.pvc, opts.cache_dir, opts.snapshot
    if opts.mountpoint:
        mnt = os.path.abspath(opts.mountpoint)
        ctx = read_control(mnt, "context.json")
        url = url or ctx["pvc"]
        cache_dir = cache_dir or ctx.get("cache_dir")
        snap_id = ctx.get("snapshot") or get_control_xattr(mnt, "user.prodfs.snapshot", timeout=60)["id"]
    if not snap_id:
        raise QuietError("prefetch takes a MOUNTPOINT or --snapshot ID", 2)
    url = url or os.environ.get("PVC_URL", "http://127.0.0.1:8750")
    cache_dir = str(cache_dir or default_cache_dir())
    show = sys.stderr.isatty() and not opts.json

    async def go() -> dict:
        async with _client(url) as client:
            snapshot = await client.get_snapshot(snap_id)
            if not show:
                return await prefetch(client, snapshot, cache_dir)
            with transfer_progress(f"prefetch {snap_id}", enabled=True) as progress:
                return await prefetch(client, snapshot, cache_dir, progress=progress)

    return answer(opts, _run(go), lambda report: print(
        f"snapshot {report['snapshot']}: {report['versions']} versions, {report['files']} files, "
        f"{report['blobs']} payloads ({report['bytes']} bytes); fetched {report['blobs_fetched']} "
        f"({report['bytes_fetched']} bytes) into {cache_dir}"))


def cmd_diff(opts: argparse.Namespace) -> int:
    from prodfs.resolution.context import Context
    from prodfs.resolution.resolver import diff, resolve
    from prodfs.resolution.snapshots import load_graph

    mnt = os.path.abspath(opts.mountpoint)
    info = read_control(mnt, "context.json")
    current = Context.from_json(info["context"])

    async def go():
        async with _client(info["pvc"]) as client:
            if opts.workspace:
                other = Context.from_workspace(await client.get_workspace(opts.workspace))
            else:
                other = current
            if opts.pin:
                other = other.replace(pin_us=None if opts.pin == "none" else to_micros(parse_time(opts.pin)))
            if opts.strategy:
                other = other.replace(strategy=opts.strategy)
            # both sides over the same products: the closures of both contexts' names
            names = [*current.roots, *current.overrides, *other.roots, *other.overrides]
            a = await load_graph(client, current, also=names)
            b = a if other.pin_us == current.pin_us else await load_graph(client, other, also=names)
            ra, rb = resolve(a, current), resolve(b, other)
            names = {p.pri for p in a} | {p.pri for p in b}
            return other, diff(ra, rb, names)

    if not (opts.pin or opts.strategy or opts.workspace):
        raise QuietError("diff takes --pin T, --strategy S or --workspace W", 2)
    other, changes = _run(go)

    def human(doc: dict) -> None:
        if not changes:
            print("no product would change version")
        for pri, a, b in changes:
            print(f"{pri}: {'-' if a is None else a} -> {'-' if b is None else b}")

    return answer(opts, {"from": current.to_json(), "to": other.to_json(),
                         "changes": [{"pri": p, "from": a, "to": b} for p, a, b in changes]}, human)


def add_parsers(sub) -> None:
    add_command(sub, "snapshot", "freeze a mount's resolution in PVC; prints the snapshot ID", cmd_snapshot
                ).add_argument("mountpoint")
    p = add_command(sub, "prefetch", "fill the local cache with every payload of a snapshot", cmd_prefetch)
    p.add_argument("mountpoint", nargs="?")
    p.add_argument("--snapshot", metavar="ID")
    p.add_argument("--pvc", metavar="URL")
    p.add_argument("--cache-dir", type=Path)
    d = add_command(sub, "diff", "preview which products would change version", cmd_diff)
    d.add_argument("mountpoint")
    d.add_argument("--pin", metavar="T")
    d.add_argument("--strategy", metavar="S")
    d.add_argument("--workspace", metavar="W")
