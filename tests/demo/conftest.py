"""Fixtures for the demo show's tests: a built plan, mount-like arrangements of it,
and one real service (a subprocess over loopback) holding the published show."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from prodfs_demo import DemoPlan, Show, build
from tests.support.demo_fixtures import call  # noqa: F401 - shared with other suites

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
