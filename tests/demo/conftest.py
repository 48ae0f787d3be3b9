"""Fixtures for the demo show's tests: a built plan, mount-like arrangements of it,
and one real service (a subprocess over loopback) holding the published show."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from prodfs_demo import DemoPlan, DemoShow, Show, build, default_start, publish
from pvc_client import PVCClient
from tests.support.service import running_service

# A fixed start: build-only tests never depend on the clock.
START = dt.datetime(2024, 3, 4, tzinfo=dt.timezone.utc)

Arrange = Callable[[Path, Mapping[str, int]], Path]


def arrange_root(source: Callable[[str, int], Path], root: Path, selection: Mapping[str, int]) -> Path:
    """Lay out ``root`` as a mount root would: ``root/<PRI>/`` holds the selected version."""
    root.mkdir(parents=True, exist_ok=True)
    for pri, number in selection.items():
        shutil.copytree(source(pri, number), root / pri)
    return root


@pytest.fixture(scope="session")
def plan(tmp_path_factory: pytest.TempPathFactory) -> DemoPlan:
    return build(tmp_path_factory.mktemp("demo-build"), start=START)


@pytest.fixture
def arrange(plan: DemoPlan) -> Arrange:
    return lambda root, selection: arrange_root(plan.directory, root, selection)


def open_layer(show: Show, root: Path, name: str):  # noqa: ANN201 - a pxr Usd.Stage
    """Open the layer of ``root/<name>/`` (``name``: a PRI, or ``PRI@N``, ``PRI@label`` in a mount)."""
    from pxr import Usd

    stage = Usd.Stage.Open(str(root / name / show.products[name.partition("@")[0]].layer))
    assert stage is not None, f"{name}: the layer did not open"
    return stage


def call(url: str, fn: Callable[[PVCClient], Awaitable[Any]]) -> Any:
    """Run one client conversation from synchronous test code."""
    async def go() -> Any:
        async with PVCClient(url) as client:
            return await fn(client)

    return trio.run(go)


@pytest.fixture(scope="session")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("demo-service") / "data") as service:
        yield service.url


@pytest.fixture(scope="session")
def live_plan(tmp_path_factory: pytest.TempPathFactory) -> DemoPlan:
    return build(tmp_path_factory.mktemp("demo-live"), start=default_start())


@pytest.fixture(scope="session")
def published(service_url: str, live_plan: DemoPlan) -> DemoShow:
    """The show on ``service_url``; tests must not change what that service holds."""
    return call(service_url, lambda c: publish(c, live_plan))
