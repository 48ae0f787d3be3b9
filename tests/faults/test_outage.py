"""PVC stopped, crawling, swallowing requests or restarting while mounts are busy.

What must hold (issue 8): what a mount already resolved and cached keeps
being served with no error; a live mount says it is degraded; whatever truly
needs the service answers EIO within a bounded time (3x --pvc-timeout is the
generous bound used here); everything recovers by itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pvc_client import format_time, utcnow
from tests.support.helpers import EIO, Publisher, file_tree, mounted, prodfs, status_of, timed_errno
from tests.support.faultproxy import FaultProxy
from tests.support.mount import wait_for
from tests.support.service import Service

pytestmark = pytest.mark.fuse

PRI = "spies:100:10-lgt:walter"
TIMEOUT = 1.0  # --pvc-timeout of the mounts under test
BOUND = 3 * TIMEOUT
FAST = ("--pvc-timeout", str(TIMEOUT), "--feed-poll", "2", "--live-timeout", "0.2")


def _files(tag: str) -> dict[str, bytes]:
    # cold/ is apart from what is read first: fetching a payload brings its neighbours along
    return {f"cached-{tag}.txt": f"cached {tag}\n".encode(), f"cold/cold-{tag}.bin": os.urandom(50_000) + tag.encode(),
            f"cold/more-{tag}.bin": os.urandom(1000), "sub/deep.txt": f"deep {tag}\n".encode()}


def _publish_two(pvc: Publisher, tmp: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    one, two = _files("v1"), _files("v2")
    pvc.publish(PRI, file_tree(tmp / "v1", one))
    pvc.publish(PRI, file_tree(tmp / "v2", two))
    return one, two


class Reader(threading.Thread):
    """Reads what is cached, over and over, while the service fails: counts errors."""

    def __init__(self, paths: dict[Path, bytes]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.stop = threading.Event()
        self.reads = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for path, data in self.paths.items():
                try:
                    got = path.read_bytes()
                    os.listdir(path.parent)
                except OSError as exc:
                    self.errors.append(f"{path}: {exc}")
                    continue
                if got != data:
                    self.errors.append(f"{path}: wrong bytes")
                self.reads += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert not self.is_alive(), "a reader of cached files hung"
        assert self.reads > 0 and not self.errors, self.errors[:5]


@pytest.mark.parametrize("fault", ["blackhole", pytest.param("refuse", marks=pytest.mark.slow)])
def test_live_mount_through_an_outage(tmp_path: Path, pvc: Publisher, proxy: FaultProxy, fault: str) -> None:
    one, two = _publish_two(pvc, tmp_path)
    with mounted(tmp_path, proxy.url, *FAST) as m:
        top = m / PRI
        assert (top / "cached-v2.txt").read_bytes() == two["cached-v2.txt"]
        assert (top / "sub/deep.txt").read_bytes() == two["sub/deep.txt"]
        reader = Reader({top / "cached-v2.txt": two["cached-v2.txt"], top / "sub/deep.txt": two["sub/deep.txt"]})
        reader.start()
        getattr(proxy, fault)()
        # what needs the service: a payload never fetched, a version never opened
        code, took = timed_errno(lambda: (top / "cold/cold-v2.bin").read_bytes())
        assert code == EIO and took < BOUND, (code, took)
        code, took = timed_errno(lambda: os.listdir(m / f"{PRI}@1"))
        assert code == EIO and took < BOUND, (code, took)
        # names and what was resolved keep answering from memory
        assert PRI in os.listdir(m.path)
        status = wait_for(lambda: (s := status_of(m.path))["health"] == "degraded" and s, timeout=15)
        assert status["stats"]["degraded_reason"]
        assert "degraded" in m.log_text()
        proxy.passthrough()
        wait_for(lambda: status_of(m.path)["health"] == "ok", timeout=30)
        # the failures were not remembered: the same paths now work
        assert (top / "cold/cold-v2.bin").read_bytes() == two["cold/cold-v2.bin"]
        assert sorted(os.listdir(m / f"{PRI}@1")) == ["cached-v1.txt", "cold", "sub"]
        reader.finish()
        assert "no longer degraded" in m.log_text()


def test_service_stopped_and_restarted(tmp_path: Path, pvc: Publisher, pvc_service: Service) -> None:
    _, two = _publish_two(pvc, tmp_path)
    with mounted(tmp_path, pvc_service.url, *FAST) as m:
        top = m / PRI
        assert (top / "cached-v2.txt").read_bytes() == two["cached-v2.txt"]
        reader = Reader({top / "cached-v2.txt": two["cached-v2.txt"]})
        reader.start()
        pvc_service.stop()
        code, took = timed_errno(lambda: (top / "cold/cold-v2.bin").read_bytes())
        assert code == EIO and took < BOUND, (code, took)
        wait_for(lambda: status_of(m.path)["health"] == "degraded", timeout=15)
        pvc_service.start()
        wait_for(lambda: status_of(m.path)["health"] == "ok", timeout=30)
        assert (top / "cold/cold-v2.bin").read_bytes() == two["cold/cold-v2.bin"]
        reader.finish()
        # the feed follows again: a publish after the restart moves the name
        three = _files("v3")
        pvc.publish(PRI, file_tree(tmp_path / "v3", three))
        wait_for(lambda: (m / PRI / "cached-v3.txt").exists(), timeout=30)


@pytest.mark.slow
def test_slow_service(tmp_path: Path, pvc: Publisher, proxy: FaultProxy) -> None:
    _, two = _publish_two(pvc, tmp_path)
    timeout = 2.0
    with mounted(tmp_path, proxy.url, "--pvc-timeout", str(timeout), "--feed-poll", "2") as m:
        top = m / PRI
        assert (top / "cached-v2.txt").read_bytes() == two["cached-v2.txt"]
        # slower than usual but within the timeout: served, no error
        proxy.slow(0.4)
        assert (top / "cold/cold-v2.bin").read_bytes() == two["cold/cold-v2.bin"]
        # slower than the timeout: EIO, bounded, and the cached keeps coming
        proxy.slow(3 * timeout)
        code, took = timed_errno(lambda: os.listdir(m / f"{PRI}@1"))
        assert code == EIO and took < 3 * timeout, (code, took)
        assert (top / "cached-v2.txt").read_bytes() == two["cached-v2.txt"]
        proxy.passthrough()
        assert "cold-v1.bin" in os.listdir(m / f"{PRI}@1" / "cold")


def _snapshot(pvc: Publisher) -> str:
    from prodfs.resolution.context import Context
    from prodfs.resolution.snapshots import create_snapshot

    async def make(client):  # noqa: ANN001, ANN202
        return await create_snapshot(client, Context(roots=()))

    return pvc.run(make)["id"]


@pytest.mark.parametrize("kind", ["snapshot", pytest.param("pin", marks=pytest.mark.slow)])
def test_fixed_mounts_serve_and_remount_offline(tmp_path: Path, pvc: Publisher, proxy: FaultProxy, kind: str) -> None:
    _, two = _publish_two(pvc, tmp_path)
    args = ("--snapshot", _snapshot(pvc)) if kind == "snapshot" else ("--pin", format_time(utcnow()))
    cache = tmp_path / "cache"
    wanted = {"cached-v2.txt", "cold/cold-v2.bin", "sub/deep.txt"}
    with mounted(tmp_path, proxy.url, *FAST, *args, cache=cache) as m:
        for rel in wanted:
            assert (m / PRI / rel).read_bytes() == two[rel]
        assert (m / f"{PRI}@1" / "cached-v1.txt").exists()  # manifest cached, payload not
        proxy.refuse()
        for rel in wanted:  # everything resolved and cached: no error at all
            assert (m / PRI / rel).read_bytes() == two[rel]
        code, took = timed_errno(lambda: (m / f"{PRI}@1" / "cold" / "cold-v1.bin").read_bytes())
        assert code == EIO and took < BOUND, (code, took)
    # a render node remounting while PVC is away: the saved context serves
    with mounted(tmp_path, proxy.url, *FAST, *args, cache=cache, name="again") as m:
        assert status_of(m.path)["health"] == "degraded"
        assert "saved by an earlier mount" in m.log_text()
        assert PRI in os.listdir(m.path)
        for rel in wanted:
            assert (m / PRI / rel).read_bytes() == two[rel]
        proxy.passthrough()
        wait_for(lambda: status_of(m.path)["health"] == "ok", timeout=30)
        assert (m / f"{PRI}@1" / "cold" / "cold-v1.bin").stat().st_size > 0


def test_live_mount_cannot_start_without_the_service(tmp_path: Path, pvc: Publisher, proxy: FaultProxy) -> None:
    """Only fixed contexts start offline; a live one says why it cannot, within the bound."""
    _publish_two(pvc, tmp_path)
    proxy.blackhole()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    import time

    started = time.monotonic()
    res = prodfs("mount", str(mnt), "--pvc", proxy.url, "--cache-dir", str(tmp_path / "c"), *FAST,
                 "--log-file", str(tmp_path / "l.log"), check=False)
    assert res.returncode == 4 and "Traceback" not in res.stderr, res.stderr
    assert time.monotonic() - started < BOUND + 10  # python start-up and the mount itself
    assert not os.path.ismount(mnt)
