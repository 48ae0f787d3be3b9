"""Fixtures for the demo show's tests: a built plan, and mount-like arrangements of it."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from prodfs_demo import DemoPlan, Show, build

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


def open_layer(show: Show, root: Path, pri: str):  # noqa: ANN201 - a pxr Usd.Stage
    from pxr import Usd

    stage = Usd.Stage.Open(str(root / pri / show.products[pri].layer))
    assert stage is not None, f"{pri}: the layer did not open"
    return stage
