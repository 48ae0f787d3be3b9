"""Fixtures for real-mount tests: a real PVC service over loopback and ``prodfs mount``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc_client import sha256_file
from tests.support.helpers import Publisher, need_fuse, no_mounts_left_behind

pytestmark = pytest.mark.fuse


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.fuse)


@pytest.fixture(autouse=True)
def _need_fuse():
    need_fuse()


@pytest.fixture
def pvc(pvc_url) -> Publisher:
    return Publisher(pvc_url)


def sha256(path: Path) -> str:
    return sha256_file(path)


@pytest.fixture(scope="session", autouse=True)
def _no_mounts_left_behind(tmp_path_factory):
    """Whatever a failing test leaves mounted under the test tree is detached at the end."""
    yield from no_mounts_left_behind(str(tmp_path_factory.getbasetemp()))
