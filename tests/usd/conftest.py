"""Fixtures for USD through ProdFS: the published demo show, mounts of it, and a scratch service.

- ``service_url`` / ``published``: the demo suite's session service holding
  the show (from tests/support/demo_fixtures.py, registered in tests/conftest.py, so the same definitions
  serve both suites). Tests must not change what it holds.
- ``live_mount``, ``day3_mount``: session mounts of that service, live and
  pinned to the date of day 3 (tests only read through them).
- ``scratch``: a second session service that tests may change (a publish
  while a stage is open). It holds the show built with **absolute** paths
  under ``scratch.mountpoint`` (so every mount of it must sit exactly
  there, one at a time) and the props product (tests/usd/props.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from prodfs_demo import DemoPlan, DemoShow, build, default_start, publish
from pvc_client import PVCClient
from tests.support.demo_fixtures import call  # noqa: F401 - the show's fixtures come from there too
from tests.support.helpers import need_fuse
from tests.support.mount import Mount, mounted
from tests.support.service import running_service
from tests.usd.props import PROPS, build_props
from tests.usd.support import MODEL, mounted_together


@pytest.fixture(scope="session", autouse=True)
def _need_fuse() -> None:
    # session scope: it must run before the session mounts, which a function fixture would not
    need_fuse()


def day3_date(show: DemoShow) -> str:
    """The bare date of day 3 (its end, UTC): lighting v2 on the diamond, the model without its hat."""
    return show.pins()["day3"].date().isoformat()


@pytest.fixture(scope="session")
def show_mounts(tmp_path_factory: pytest.TempPathFactory, service_url: str,  # noqa: F811
                published: DemoShow) -> Iterator[dict[str, Mount]]:  # noqa: F811
    contexts = {"live": (), "day3": ("--pin", day3_date(published))}
    with mounted_together(tmp_path_factory.mktemp("usd-show"), service_url, contexts) as mounts:
        yield mounts


@pytest.fixture(scope="session")
def live_mount(show_mounts: dict[str, Mount]) -> Mount:
    return show_mounts["live"]


@pytest.fixture(scope="session")
def day3_mount(show_mounts: dict[str, Mount]) -> Mount:
    return show_mounts["day3"]


@dataclass(frozen=True)
class Scratch:
    url: str
    plan: DemoPlan  # the show built with absolute paths under ``mountpoint``
    show: DemoShow  # ... as published (the versions' times)
    base: Path

    @property
    def mountpoint(self) -> Path:
        return self.base / SCRATCH_MOUNT

    def mount(self, *args: str) -> AbstractContextManager[Mount]:
        """``mounted(...)`` at the one mountpoint the absolute paths name."""
        return mounted(self.base, self.url, *args, name=SCRATCH_MOUNT)


SCRATCH_MOUNT = "p"


# props@1 on day 3 (on model@2), props@2 on day 5 (on model@3): a day-3 pin sees props@1
PROPS_VERSIONS = {1: (dt.timedelta(days=3, hours=1), 2), 2: (dt.timedelta(days=5, hours=1), 3)}


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    base = tmp_path_factory.mktemp("usd-scratch")
    plan = build(base / "build", start=default_start(), mount_root=str(base / SCRATCH_MOUNT))
    with running_service(base / "data") as service:
        show = call(service.url, lambda c: publish(c, plan))
        for number, (offset, model) in PROPS_VERSIONS.items():
            top = build_props(base / "build", number)
            at = show.start + offset

            async def one(c: PVCClient, top: Path = top, at: dt.datetime = at, model: int = model) -> dict:
                return await c.publish_directory(PROPS, top, dependencies=[f"{MODEL}@{model}"], at=at,
                                                 message="USD file forms: .usd crate and text, usdz")

            assert call(service.url, one)["number"] == number
        yield Scratch(service.url, plan, show, base)
