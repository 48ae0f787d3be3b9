"""Fixtures for real-mount tests: a real PVC service over loopback and ``prodfs mount``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from pvc_client import PVCClient, sha256_file

pytestmark = pytest.mark.fuse


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.fuse)


@pytest.fixture(autouse=True)
def _need_fuse():
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        if os.environ.get("CI"):
            pytest.fail("FUSE is not available (/dev/fuse, fusermount3): CI must have it")
        pytest.skip("FUSE is not available")


class Publisher:
    """Publish directories to a running service from synchronous test code."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, *args, **kwargs):
        async def go():
            async with PVCClient(self.url) as c:
                return await getattr(c, method)(*args, **kwargs)

        return trio.run(go)

    def publish(self, pri: str, directory: Path, **kwargs) -> dict:
        return self.call("publish_directory", pri, directory, **kwargs)


@pytest.fixture
def pvc(pvc_url) -> Publisher:
    return Publisher(pvc_url)


def sha256(path: Path) -> str:
    return sha256_file(path)


@pytest.fixture(scope="session", autouse=True)
def _no_mounts_left_behind(tmp_path_factory):
    """Whatever a failing test leaves mounted under the test tree is detached at the end."""
    yield
    from mount_tools._mounts import prodfs_mounts, unmount

    base = str(tmp_path_factory.getbasetemp())
    for m in prodfs_mounts():
        if m.startswith(base):
            try:
                unmount(m, lazy=True)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
