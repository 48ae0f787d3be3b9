"""Fixtures shared by every suite: a running PVC service, and a PostgreSQL database.

- ``pvc_service``: a fresh service subprocess over SQLite (function scope);
  ``pvc_url`` is its base URL (the API is under ``/api/v1``).
- ``pg_url``: a fresh PostgreSQL database per test module, on the server named
  by ``PRODFS_TEST_PG_URL`` (``scripts/pg-test-server.sh start DIR`` prints one).
  Without it the test is skipped, or fails when ``CI`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.service import Service, pg_database, running_service

# the published demo show (service_url, live_plan, published): one per session
pytest_plugins = ["tests.support.demo_fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true",
                     help="also run the long tests marked slow (fault, load and fuzz suites)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def pvc_service(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path / "pvc-data") as service:
        yield service


@pytest.fixture
def pvc_url(pvc_service: Service) -> str:
    return pvc_service.url


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    base = os.environ.get("PRODFS_TEST_PG_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("PRODFS_TEST_PG_URL is not set: CI must run the PostgreSQL tests")
        pytest.skip("PRODFS_TEST_PG_URL is not set (scripts/pg-test-server.sh start DIR prints one)")
    with pg_database(base) as url:
        yield url
