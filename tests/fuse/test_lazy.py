"""A mount costs what it touches: names learned at first use, closures, root pages, a filtered feed.

Real service, real mounts. The shared service holds other tests' products
too, which is the point: a mount must not load them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.helpers import Publisher, file_tree
from tests.support.mount import mounted, prodfs, wait_for


def _tree(tmp_path: Path, name: str) -> Path:
    return file_tree(tmp_path / name, {"f.txt": name.encode()})


def _version(path: Path) -> int:
    return int(os.getxattr(path, "user.prodfs.version"))


def _stats(m) -> dict:  # noqa: ANN001
    return json.loads((m / ".prodfs" / "stats.json").read_text())


def _requests(m) -> int:  # noqa: ANN001
    return _stats(m)["pvc_requests"]


def _products(m) -> int:  # noqa: ANN001
    return json.loads((m / ".prodfs" / "context.json").read_text())["products"]


def test_a_live_mount_learns_a_product_at_its_first_lookup(tmp_path: Path, pvc: Publisher, pvc_url: str) -> None:
    src = _tree(tmp_path, "src")
    a, b, c, later = "lazy1-a", "lazy1-b", "lazy1-c", "lazy1-later"
    pvc.publish(a, src)
    pvc.publish(b, src, dependencies=[f"{a}@1"])
    pvc.publish(c, src)
    with mounted(tmp_path, pvc_url) as m:
        assert _products(m) == 0  # nothing of the store is loaded at start
        before = _requests(m)
        assert (m / b / "f.txt").read_bytes() == b"src"
        assert _products(m) == 1  # the product alone, not its dependencies
        # one request to learn it, one for its manifest, one for the payload: nothing per product of the store
        assert _requests(m) - before == 3
        # a name the store does not have: asked once, then known to be missing
        assert not (m / later).exists()
        asked = _requests(m)
        assert not (m / later).exists()
        assert not (m / f"{later}@1").exists()
        assert _requests(m) == asked
        # the feed: a new version of a product in use moves its name...
        pvc.publish(b, _tree(tmp_path, "src2"))
        wait_for(lambda: _version(m / b) == 2, timeout=15)
        # ...a publish of the missing name makes it appear...
        pvc.publish(later, src)
        wait_for(lambda: (m / later).exists(), timeout=15)
        # ...and a product never used stays unknown, whatever is published of it
        pvc.publish(c, _tree(tmp_path, "src3"))
        pvc.publish(a, _tree(tmp_path, "src4"))
        wait_for(lambda: _stats(m)["events"] >= 4, timeout=15)
        assert _products(m) == 2  # b and later
        assert _version(m / c) == 2 and _products(m) == 3  # learned now, at its newest
        assert _stats(m)["resolver_runs"] == 1  # no roots: nothing was ever re-resolved


def test_the_root_lists_the_store_a_page_at_a_time(tmp_path: Path, pvc: Publisher, pvc_url: str) -> None:
    src = _tree(tmp_path, "src")
    mine = [f"lazy2-p{i:02d}" for i in range(23)]
    for pri in mine:
        pvc.publish(pri, src)
    with mounted(tmp_path, pvc_url, "--root-page", "7") as m:
        store = {p["pri"] for p in pvc.call("list_products")}
        listed = os.listdir(m.path)
        assert len(listed) == len(set(listed))  # no name twice across pages
        assert set(listed) == store | {".prodfs"}
        assert _products(m) == 0  # listing learns nothing
        # what a listing shows is a name; its first use learns it
        entries = {e.name: e for e in os.scandir(m.path)}
        assert entries[mine[3]].is_dir()
        assert (m / mine[3] / "f.txt").read_bytes() == b"src" and _products(m) == 1
        # ls -l: every entry looked up (and learned) through the listing's names
        for pri in mine:
            assert os.stat(m / pri).st_mtime > 0
        assert _products(m) == len(mine)
        pvc.publish("lazy2-new", src)
        wait_for(lambda: "lazy2-new" in os.listdir(m.path), timeout=15)


def test_a_workspace_mount_loads_the_closure_of_its_roots(tmp_path: Path, pvc: Publisher, pvc_url: str) -> None:
    src = _tree(tmp_path, "src")
    model, rig, shot, tex, other = "lazy3-model", "lazy3-rig", "lazy3-shot", "lazy3-tex", "lazy3-other"
    pvc.publish(model, src)
    pvc.publish(rig, src, dependencies=[f"{model}@1"])
    pvc.publish(shot, src, dependencies=[f"{rig}@1"])
    pvc.publish(other, src)
    pvc.publish(tex, src)
    pvc.call("put_workspace", "lazy3", {"roots": [shot], "strategy": "highest"})
    with mounted(tmp_path, pvc_url, "--workspace", "lazy3") as m:
        assert _products(m) == 3  # the roots' closure, nothing else of the store
        runs = _stats(m)["resolver_runs"]
        # a change elsewhere: followed cheaply, nothing resolved again
        pvc.publish(other, src)
        wait_for(lambda: _stats(m)["events"] >= 1, timeout=15)
        assert _stats(m)["resolver_runs"] == runs
        # a new version in the closure, depending on a product the mount never loaded
        pvc.publish(rig, src, dependencies=[f"{model}@1", f"{tex}@1"])
        wait_for(lambda: _products(m) == 4, timeout=15)
        assert _stats(m)["resolver_runs"] == runs + 1
        # only what the change can move was decided again: the rig and what it may depend on
        assert _stats(m)["resolver_decided"] == 3
        assert _version(m / rig) == 1  # highest: only shot@1 asks, for rig@1
        pvc.publish(shot, src, dependencies=[f"{rig}@2"])
        wait_for(lambda: _version(m / rig) == 2, timeout=15)
        why = json.loads(prodfs("why", str(m / tex), "--json").stdout)
        assert why["in_graph"] is True and why["requests"][0]["dependent"] == f"{rig}@2"
        assert _version(m / other) == 2  # outside the graph, learned on demand


def test_a_snapshot_mount_knows_its_choices_from_the_start(tmp_path: Path, pvc: Publisher, pvc_url: str) -> None:
    from prodfs.resolution.snapshots import snapshot_workspace

    src = _tree(tmp_path, "src")
    pvc.publish("lazy4-one", src)
    pvc.publish("lazy4-two", src, dependencies=["lazy4-one@1"])
    parts = [f"lazy4-part{i}" for i in range(6)]
    for part in parts:
        pvc.publish(part, src)
    pvc.call("put_workspace", "lazy4", {"roots": ["lazy4-two", *parts]})
    snap = pvc.run(lambda c: snapshot_workspace(c, "lazy4"))["id"]
    with mounted(tmp_path, pvc_url, "--snapshot", snap) as m:  # on an empty cache
        assert _products(m) == 8
        before = _requests(m)
        assert (m / "lazy4-one" / "f.txt").read_bytes() == b"src"
        for name in ["lazy4-two", *parts]:
            assert (m / name / "f.txt").read_bytes() == b"src"
        stats = _stats(m)
        # the first one's manifest alone, the snapshot's seven others in one batch behind it, and
        # the payload (the same everywhere); the names were known at mount
        assert _requests(m) - before == 3
        assert stats["manifests_fetched"] == 8 and stats["manifest_requests"] == 2


def test_a_mount_of_a_big_store_holds_what_it_used(tmp_path: Path) -> None:
    """20,000 products imported (about 10 s): a live mount loads none, lists them all in pages, learns what it stats."""
    import random

    from bench.gen_history import history, layout
    from pvc_service._import import main as import_main
    from tests.support.service import running_service

    n = 20_000
    path = tmp_path / "h.jsonl"
    with path.open("w") as out:
        for record in history(n, 2, files=1, seed=3):
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    assert import_main([str(path), "--data", str(tmp_path / "pvc"), "--allow-missing-blobs"]) == 0
    names = [pri for pri, _ in layout(n, random.Random(3))]
    with running_service(tmp_path / "pvc") as service, mounted(tmp_path, service.url) as m:
        assert _products(m) == 0
        before = _requests(m)
        listed = os.listdir(m.path)
        assert sorted(listed) == sorted([*names, ".prodfs"])
        assert _requests(m) - before == -(-n // 1000)  # a request a page of 1,000 names (the service says which is last)
        assert _products(m) == 0
        sample = random.Random(5).sample(names, 200)
        for pri in sample:
            assert _version(m / pri) == 2
        assert _products(m) == 200 and _stats(m)["learned"] == 200
