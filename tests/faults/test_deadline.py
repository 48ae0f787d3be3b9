"""The client's deadline: one call, retries and backoff included, ends in time.

The daemon gives every PVC call --pvc-timeout as a deadline, so a FUSE
request never waits minutes on retries; a download that keeps moving is not
cut, one that stalls is.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import trio

from pvc_client import PVCClient, Unavailable
from tests.support.helpers import Publisher, file_tree, sha256
from tests.support.faultproxy import FaultProxy

PRI = "spies:100:10-lgt:walter"


def _call(url: str, fn, **kwargs):  # noqa: ANN001, ANN202
    async def go():  # noqa: ANN202
        async with PVCClient(url, **kwargs) as c:
            return await fn(c)

    return trio.run(go)


@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
def test_a_call_ends_by_its_deadline(tmp_path: Path, pvc: Publisher, proxy: FaultProxy, fault: str) -> None:
    pvc.publish(PRI, file_tree(tmp_path / "src", {"a.txt": b"a"}))
    getattr(proxy, fault)()
    started = time.monotonic()
    with pytest.raises(Unavailable):
        _call(proxy.url, lambda c: c.get_version(PRI, 1), timeout=0.5, deadline=0.5)
    took = time.monotonic() - started
    assert took < 1.5, took  # 3x the deadline; the retries alone would take longer


def test_a_moving_download_outlives_the_deadline(tmp_path: Path, pvc: Publisher, proxy: FaultProxy) -> None:
    data = os.urandom(256 * 1024)
    src = file_tree(tmp_path / "src", {"plate.exr": data})
    pvc.publish(PRI, src)
    proxy.slow(0.3)  # every chunk late, none later than the timeout
    sink = io.BytesIO()
    n = _call(proxy.url, lambda c: c.download_blob(sha256(src / "plate.exr"), sink), timeout=1.0, deadline=1.0)
    assert n == len(data) and sink.getvalue() == data


@pytest.mark.parametrize("option", [("--pvc-timeout", "0"), ("--pvc-timeout", "nan"), ("--feed-poll", "0"),
                                    ("--feed-poll", "61"), ("--feed-poll", "soon")])
def test_bad_timeouts_are_usage_errors(tmp_path: Path, option: tuple[str, str]) -> None:
    from tests.support.mount import prodfs

    (tmp_path / "mnt").mkdir()
    res = prodfs("mount", str(tmp_path / "mnt"), "--cache-dir", str(tmp_path / "c"), *option, check=False)
    assert res.returncode == 2 and "expected seconds between" in res.stderr and "Traceback" not in res.stderr
