"""The published demo show, shared by every suite that needs it (one service per test session).

Registered as a plugin by tests/conftest.py, so the session fixtures have one
definition and the show is published once, whichever suites run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from prodfs_demo import DemoPlan, DemoShow, build, default_start, publish
from pvc_client import PVCClient
from tests.support.service import running_service


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
