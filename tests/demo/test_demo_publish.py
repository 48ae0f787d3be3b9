"""The demo show published to a real service (a subprocess over loopback).

One service (``service_url``, see conftest.py) holds the published show;
tests that need a service in another state (foreign data, an interrupted
publication) use the function-scoped ``pvc_url`` of tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from prodfs_demo import DemoError, DemoPlan, DemoShow, build, check_stage, default_start, publish
from pvc_client import PVCClient
from tests.demo.conftest import call, open_layer

LGT = "spies:100:10-lgt:walter"
MODEL = "spies:asset:walter-model"
RIG = "spies:asset:walter-rig"


def test_publish_puts_the_whole_history_on_the_service(service_url: str, live_plan: DemoPlan,
                                                       published: DemoShow) -> None:
    assert not published.already_published
    assert published.url == service_url

    async def versions(c: PVCClient) -> dict[str, list[dict]]:
        return {pri: await c.list_versions(pri) for pri in live_plan.products}

    held = call(service_url, versions)
    for pri, product in live_plan.products.items():
        assert [v["number"] for v in held[pri]] == sorted(product.versions)
        for v in held[pri]:
            planned = product.versions[v["number"]]
            assert sorted(v["dependencies"]) == sorted(planned.dependencies)
            assert published.products[pri].versions[v["number"]].created_at == planned.created_at
    assert published.start == live_plan.start
    # read back from the service, the history implies exactly what the plan predicted
    assert published.contexts() == live_plan.contexts()


def test_service_labels_match_the_description(service_url: str, published: DemoShow) -> None:
    day3 = published.pins()["day3"]

    async def labels(c: PVCClient) -> tuple[dict, dict]:
        now = {pri: await c.labels(pri) for pri in published.products}
        then = {pri: await c.labels(pri, as_of=day3) for pri in published.products}
        return now, then

    now, then = call(service_url, labels)
    assert {p: l for p, l in now.items() if l} == published.labels()
    assert {p: l for p, l in then.items() if l} == published.labels(day3)
    assert published.labels(day3)[LGT]["approved"] == 2 and published.labels()[LGT]["approved"] == 3


def test_publishing_again_publishes_nothing(service_url: str, live_plan: DemoPlan, published: DemoShow) -> None:
    async def state(c: PVCClient) -> tuple[dict, dict]:
        versions = {pri: len(await c.list_versions(pri)) for pri in live_plan.products}
        history = {(pri, label): len(await c.label_history(pri, label))
                   for pri, label in [(MODEL, "approved"), (LGT, "approved"), (LGT, "published")]}
        return versions, history

    before = call(service_url, state)
    again = call(service_url, lambda c: publish(c, live_plan))
    assert again.already_published
    assert call(service_url, state) == before
    assert again.to_json() | {"already_published": False} == published.to_json()


@pytest.mark.parametrize("context", ["latest", "day3", "day4"])
def test_materialized_shot_composes(service_url: str, published: DemoShow, tmp_path: Path,
                                    context: str) -> None:
    as_of = None if context == "latest" else published.pins()[context]
    selection = published.selection(as_of)

    async def materialize(c: PVCClient) -> dict[str, int]:
        got = {}
        for pri in selection:  # versionless: the service picks the newest visible as of the time
            version = await c.materialize(pri, tmp_path / pri, as_of=as_of)
            got[pri] = version["number"]
        return got

    assert call(service_url, materialize) == selection
    problems = check_stage(open_layer(published, tmp_path, LGT), published.compose(LGT, selection))
    assert problems == []


def test_description_survives_a_file(published: DemoShow, tmp_path: Path) -> None:
    published.save(tmp_path / "show.json")
    loaded = DemoShow.load(tmp_path / "show.json")
    assert loaded.to_json() == published.to_json()
    assert loaded.expected[MODEL][2]["/walter/geo/body.radius"] == 1.5


def test_a_history_in_the_future_is_refused_before_publishing(service_url: str, published: DemoShow,
                                                             tmp_path: Path) -> None:
    recent = build(tmp_path, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1), scale=2)
    with pytest.raises(DemoError, match="future"):
        call(service_url, lambda c: publish(c, recent))
    products = call(service_url, lambda c: c.list_products(prefix="spies:100:20"))
    assert products == []


def test_cli_is_idempotent_and_writes_the_description(service_url: str, published: DemoShow,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "show.json"
    done = subprocess.run([sys.executable, "-m", "prodfs_demo", "--url", service_url, "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "already published" in done.stdout
    loaded = json.loads(out.read_text())
    assert loaded["contexts"] == published.to_json()["contexts"]


def test_cli_reports_an_unreachable_service_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    done = subprocess.run([sys.executable, "-m", "prodfs_demo", "--url", url, "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("prodfs-demo: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_interrupted_publication_resumes_and_foreign_versions_are_refused(pvc_url: str,
                                                                           tmp_path: Path) -> None:
    # two shots: ten products published side by side, each waiting for its dependencies
    plan = build(tmp_path / "plan", start=default_start(), scale=2)
    partial = build(tmp_path / "partial", start=default_start(), scale=2)
    partial.steps = partial.steps[:12]
    partial.label_moves = [m for m in partial.label_moves if not m.after_history]
    first = call(pvc_url, lambda c: publish(c, partial))
    assert not first.already_published
    assert len(first.products) < len(plan.products)
    show = call(pvc_url, lambda c: publish(c, plan))
    assert not show.already_published
    assert show.contexts() == plan.contexts()
    assert show.labels()["spies:100:20-lgt:walter"] == {"published": 3, "approved": 3}
    counts = call(pvc_url, lambda c: _counts(c, plan))
    assert counts == {pri: len(p.versions) for pri, p in plan.products.items()}

    # a version the demo did not publish under one of its names stops it, and nothing is published
    other = tmp_path / "other"
    other.mkdir()
    (other / "rig.usda").write_text("#usda 1.0\n")
    call(pvc_url, lambda c: c.publish_directory(RIG, other, dependencies=[f"{MODEL}@3"]))
    with pytest.raises(DemoError, match="something other than the demo"):
        call(pvc_url, lambda c: publish(c, plan))
    counts[RIG] += 1
    assert call(pvc_url, lambda c: _counts(c, plan)) == counts


async def _counts(c: PVCClient, plan: DemoPlan) -> dict[str, int]:
    return {pri: len(await c.list_versions(pri)) for pri in plan.products}
