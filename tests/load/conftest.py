"""Load tests: many reader processes and many clients against real mounts and a real service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.helpers import no_mounts_left_behind


@pytest.fixture(scope="session", autouse=True)
def _no_mounts_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield from no_mounts_left_behind(str(tmp_path_factory.getbasetemp()))
