"""Fault injection against real mounts and a real service: a fault proxy between them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.helpers import Publisher, need_fuse, no_mounts_left_behind
from tests.support.faultproxy import FaultProxy
from tests.support.service import Service


@pytest.fixture(autouse=True)
def _need_fuse(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("fuse"):
        need_fuse()


@pytest.fixture
def pvc(pvc_url: str) -> Publisher:
    return Publisher(pvc_url)


@pytest.fixture
def proxy(pvc_service: Service) -> Iterator[FaultProxy]:
    with FaultProxy(pvc_service.port) as p:
        yield p


@pytest.fixture(scope="session", autouse=True)
def _no_mounts_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield from no_mounts_left_behind(str(tmp_path_factory.getbasetemp()))
