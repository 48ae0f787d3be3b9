"""Real-service fixtures for the client and CLI tests.

One service per test module (started with the shared `running_service`)
keeps the suite fast; every test names its own products (`pri`), so tests
sharing a service never see each other's data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.service import Service, running_service

_names = itertools.count(1)


@pytest.fixture(scope="module")
def module_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("pvc") / "data") as service:
        yield service


@pytest.fixture
def url(module_service: Service) -> str:
    return module_service.url


@pytest.fixture
def pri() -> str:
    """A product name no other test uses."""
    return f"show{next(_names)}:100-lgt:walter"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    from pvc_trees import make_tree

    return make_tree(tmp_path / "src")
