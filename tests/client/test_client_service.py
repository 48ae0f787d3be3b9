"""The client against the real service, a subprocess over loopback."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from pvc_client import (
    Publication,
    Conflict,
    InvalidInput,
    NotFound,
    PackParser,
    PVCClient,
    PVCError,
    Unauthorized,
    Unavailable,
    format_time,
    parse_time,
)
from pvc_trees import describe, make_tree
from tests.support.service import Service, StoredBlob, running_service


def arun(url: str, fn: Callable[[PVCClient], Awaitable[Any]], **kwargs: Any) -> Any:
    async def main() -> Any:
        async with PVCClient(url, **kwargs) as client:
            return await fn(client)

    return trio.run(main)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_health(url: str) -> None:
    assert arun(url, lambda c: c.health())["status"] == "ok"


def test_publish_directory_then_materialize_round_trip(url: str, pri: str, tree: Path, tmp_path: Path) -> None:
    progress: list[tuple[int, int, int, int]] = []

    async def main(c: PVCClient) -> tuple[dict, dict, dict]:
        v1 = await c.publish_directory(pri, tree, message="first", labels=["published"],
                                       progress=lambda *figures: progress.append(figures))
        sent_first = c.stats["bytes_out"]
        v2 = await c.publish_directory(pri, tree, message="same again")
        # the store already holds every blob: the second publish sends only JSON
        assert c.stats["bytes_out"] - sent_first < 10_000
        got = await c.materialize(f"{pri}@published", tmp_path / "out" / "walter")
        return v1, v2, got

    v1, v2, got = arun(url, main)
    assert (v1["ref"], v2["ref"], got["ref"]) == (f"{pri}@1", f"{pri}@2", f"{pri}@1")
    assert v1["message"] == "first" and "published" in v1["labels"]
    assert describe(tmp_path / "out" / "walter") == describe(tree)
    # progress counts the tree's files as each is hashed and stored (or found stored), duplicates included
    files = [e for e in v1["manifest"] if e["type"] == "file"]
    total = sum(e["size"] for e in files)
    assert progress[0] == (0, total, 0, len(files)) and progress[-1] == (total, total, len(files), len(files))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "walter"]  # no staging left


def test_materialize_into_an_empty_directory_and_refuse_a_full_one(url: str, pri: str, tree: Path,
                                                                   tmp_path: Path) -> None:
    target = tmp_path / "empty-target"
    target.mkdir()

    async def main(c: PVCClient) -> None:
        await c.publish_directory(pri, tree)
        await c.materialize(pri, target)
        with pytest.raises(InvalidInput, match="not empty"):
            await c.materialize(pri, target)
        with pytest.raises(InvalidInput, match="not a directory"):
            await c.materialize(pri, target / "run.sh")

    arun(url, main)
    assert describe(target) == describe(tree)


def test_failed_materialize_leaves_nothing(url: str, pri: str, tmp_path: Path,
                                           module_service: Service) -> None:
    src = tmp_path / "src"
    src.mkdir()
    payload = b"will be damaged in the store"
    (src / "f.bin").write_bytes(payload)
    target = tmp_path / "out"

    async def main(c: PVCClient) -> None:
        await c.publish_directory(pri, src)
        with pytest.raises(NotFound):
            await c.materialize(f"{pri}@7", target)
        # damage the stored blob behind the service's back: the client must notice
        StoredBlob(module_service.data_dir, payload).write(b"X" * len(payload))
        with pytest.raises(PVCError, match="corrupted"):
            await c.materialize(pri, target)

    arun(url, main)
    assert list(tmp_path.iterdir()) == [src]


def test_a_published_directory_is_stored_in_path_order(url: str, tmp_path: Path, module_service: Service) -> None:
    # the store keeps a batch's small blobs in the order sent: a directory's files, read back in
    # path order, are then one stretch of one pack file
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    payloads = {f"f{i:02d}.dat": os.urandom(300 + i) for i in range(30)}
    payloads.update({f"sub/g{i}.dat": os.urandom(50) for i in range(5)})
    for name, data in payloads.items():
        (src / name).write_bytes(data)
    arun(url, lambda c: c.publish_directory("pathorder:seq-lgt:layout", src))
    stored = {sha(data): name for name, data in payloads.items()}
    orders = []
    for pack in module_service.data_dir.rglob("*.pack"):
        parser = PackParser(max_blob=1 << 20)
        names = [stored[f.sha256] for f in parser.feed(pack.read_bytes()) if f.sha256 in stored]
        if names:
            orders.append(names)
    assert orders == [sorted(payloads)]


def test_publish_refusals(url: str, pri: str) -> None:
    data = b"content"
    entry = {"path": "f", "type": "file", "mode": 0o644, "size": len(data), "sha256": sha(data)}

    async def main(c: PVCClient) -> None:
        with pytest.raises(InvalidInput) as missing:
            await c.publish(pri, [entry])
        assert missing.value.status == 400 and "not uploaded" in str(missing.value)
        assert await c.missing_blobs([sha(data)]) == [sha(data)]
        await c.upload_blob(sha(data), data)
        assert await c.missing_blobs([sha(data)]) == []
        with pytest.raises(InvalidInput) as mismatch:
            await c.upload_blob(sha(b"other"), data)
        assert mismatch.value.status == 400
        with pytest.raises(InvalidInput):  # the dependency does not exist
            await c.publish(pri, [entry], dependencies=[f"{pri}x@1"])
        v1 = await c.publish(pri, [entry])
        with pytest.raises(Conflict):  # earlier than the newest version
            await c.publish(pri, [entry], at=parse_time(v1["created_at"]) - dt.timedelta(hours=1))
        assert [v["number"] for v in await c.list_versions(pri)] == [1]

    arun(url, main)


def test_labels_move_delete_and_history(url: str, pri: str, tree: Path) -> None:
    async def main(c: PVCClient) -> None:
        await c.publish_directory(pri, tree)
        await c.publish_directory(pri, tree)
        assert (await c.move_label(pri, "approved", 1))["version"] == 1
        await c.move_label(pri, "approved", 2)
        assert await c.labels(pri) == {"approved": 2}
        assert (await c.get_version(pri, "approved"))["number"] == 2
        await c.delete_label(pri, "approved")
        assert await c.labels(pri) == {}
        history = await c.label_history(pri, "approved")
        assert [h["version"] for h in history] == [1, 2, None]
        with pytest.raises(NotFound):
            await c.get_version(pri, "approved")
        with pytest.raises(NotFound):
            await c.move_label(pri, "approved", 9)

    arun(url, main)


def test_rename_keeps_the_old_name_as_an_alias(url: str, pri: str, tree: Path) -> None:
    new = pri.replace("walter", "walt")

    async def main(c: PVCClient) -> None:
        await c.publish_directory(pri, tree)
        renamed = await c.rename(pri, new)
        assert renamed["pri"] == new and pri in renamed["aliases"]
        assert (await c.get_version(pri))["pri"] == new
        assert (await c.get_product(pri))["pri"] == new
        with pytest.raises(Conflict):
            await c.rename(new, pri)  # names are never reused

    arun(url, main)


def test_time_travel(url: str, pri: str, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    t1, t2 = now - dt.timedelta(days=3), now - dt.timedelta(days=1)
    src = tmp_path / "src"
    src.mkdir()

    async def main(c: PVCClient) -> None:
        (src / "v").write_text("one")
        v1 = await c.publish_directory(pri, src, at="-3d")
        (src / "v").write_text("two")
        await c.publish_directory(pri, src, at=format_time(t2))
        assert abs(parse_time(v1["created_at"]) - t1) < dt.timedelta(minutes=5)
        middle = t1 + dt.timedelta(days=1)
        assert [v["number"] for v in await c.list_versions(pri, as_of=middle)] == [1]
        assert (await c.get_version(pri, as_of="-2d"))["number"] == 1
        assert (await c.get_version(pri))["number"] == 2
        # many at once, each as the single GET answers it, as of a time too
        assert await c.get_versions([(pri, 2), (pri, 1)]) == [await c.get_version(pri, 2), await c.get_version(pri, 1)]
        assert await c.get_versions([(pri, 2), (pri, 1)], as_of=middle, missing="omit") == [
            None, await c.get_version(pri, 1, as_of=middle)]
        with pytest.raises(NotFound):
            await c.get_versions([(pri, 1), (pri, 2)], as_of=middle)
        with pytest.raises(NotFound):
            await c.get_product(pri, as_of=t1 - dt.timedelta(hours=1))
        await c.materialize(pri, tmp_path / "then", as_of=middle)

    arun(url, main)
    assert (tmp_path / "then" / "v").read_text() == "one"


def test_download_ranges(url: str) -> None:
    data = os.urandom(300_000)

    async def main(c: PVCClient) -> None:
        await c.upload_blob(sha(data), data)
        assert await c.has_blob(sha(data)) == len(data)
        assert await c.has_blob(sha(b"never stored")) is None
        for offset, length in ((0, None), (5, 10), (299_990, None), (100_000, 150_000)):
            sink = io.BytesIO()
            n = await c.download_blob(sha(data), sink, offset=offset, length=length)
            want = data[offset:] if length is None else data[offset:offset + length]
            assert sink.getvalue() == want and n == len(want)
        with pytest.raises(NotFound):
            await c.download_blob(sha(b"never stored"), io.BytesIO())

    arun(url, main)


def test_index_closure_and_events(url: str, pri: str, tree: Path) -> None:
    dep = pri.replace("lgt", "tex")

    async def main(c: PVCClient) -> None:
        start = 0
        while page := (await c.events(after=start))["events"]:  # drain to the head of the feed
            start = page[-1]["id"]
        got: list[dict] = []

        async def wait_for_news() -> None:
            got.extend((await c.events(after=start, timeout=20))["events"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_news)
            await trio.sleep(0.2)  # let the long poll start first; correctness does not depend on it
            d1 = await c.publish_directory(dep, tree)
        assert got and got[0]["kind"] == "publish" and got[0]["pri"] == dep and got[0]["id"] > start
        await c.publish_directory(pri, tree, dependencies=[d1["ref"]])
        index = await c.index(prefix=pri.split(":")[0] + ":")
        assert set(index["products"]) == {pri, dep}
        closure = await c.closure([pri])
        assert set(closure["products"]) == {pri, dep}
        assert closure["roots"][0]["number"] == 1
        with pytest.raises(NotFound):
            await c.closure([pri.replace("walter", "nobody")])
        later = await c.events(after=start)
        assert [e["pri"] for e in later["events"] if e["kind"] == "publish"] == [dep, pri]
        assert later["cursor"] >= later["events"][-1]["id"]

    arun(url, main)


def test_paged_product_listing(url: str) -> None:
    async def main(c: PVCClient) -> None:
        data = b"x"
        await c.upload_blob(sha(data), data)
        entry = {"path": "x", "type": "file", "size": 1, "sha256": sha(data)}
        names = [f"paging-asset:p{i:04d}" for i in range(17)]
        for name in names:
            await c.publish(name, [entry])
        c.PAGE_SIZE = 5  # four pages, the last one short
        requests = c.stats["requests"]
        assert [p["pri"] for p in await c.list_products(prefix="paging-")] == names
        assert c.stats["requests"] - requests == 4
        c.PAGE_SIZE = 17  # a full last page: the service says it is the last, no empty page follows
        requests = c.stats["requests"]
        assert [p["pri"] for p in await c.list_products(prefix="paging-")] == names
        assert c.stats["requests"] - requests == 1
        # one page at a time, for listings that must not hold every name
        page, after = await c.product_page(prefix="paging-", limit=10)
        assert [p["pri"] for p in page] == names[:10] and after == names[9]
        page, after = await c.product_page(prefix="paging-", after=after, limit=10)
        assert [p["pri"] for p in page] == names[10:] and after is None
        with pytest.raises(InvalidInput):
            await c.product_page(limit=0)

    arun(url, main)


def test_index_and_closure_page_transparently(url: str) -> None:
    async def main(c: PVCClient) -> None:
        data = b"g"
        await c.upload_blob(sha(data), data)
        entry = {"path": "g", "type": "file", "size": 1, "sha256": sha(data)}
        leaves = [f"gpage-asset:l{i:02d}" for i in range(7)]
        for name in leaves:
            await c.publish(name, [entry], labels=["published"])
        await c.publish("gpage-shot:lgt", [entry], dependencies=[f"{n}@1" for n in leaves])
        pinned = (await c.index(prefix="gpage-"))["as_of"]
        c.GRAPH_PAGE_SIZE = None  # the whole graph in one answer
        index = await c.index(prefix="gpage-", as_of=pinned)
        closure = await c.closure(["gpage-shot:lgt", "gpage-nobody:x"], as_of=pinned, missing="omit")
        one = await c.closure(["gpage-shot:lgt"], depth=0)
        assert len(index["products"]) == 8 and len(closure["products"]) == 8
        c.GRAPH_PAGE_SIZE = 3  # three pages each, merged into the same answers
        requests = c.stats["requests"]
        assert await c.index(prefix="gpage-", as_of=pinned) == index
        assert await c.closure(["gpage-shot:lgt", "gpage-nobody:x"], as_of=pinned, missing="omit") == closure
        assert c.stats["requests"] - requests == 6
        # unpinned: the first page's time is every page's, and its cursor the answer's
        paged = await c.index(prefix="gpage-")
        assert paged["products"] == index["products"] and paged["as_of"] > pinned
        assert paged["cursor"] == index["cursor"] and paged["next"] is None
        assert list(paged["products"]) == sorted(paged["products"])
        depth0 = await c.closure(["gpage-shot:lgt"], depth=0)
        assert depth0["products"] == one["products"] and depth0["roots"] == one["roots"]
        assert closure["roots"][1] == {"ref": "gpage-nobody:x", "pri": None, "number": None}

    arun(url, main)


def test_workspaces_and_snapshots(url: str, pri: str, tree: Path) -> None:
    async def main(c: PVCClient) -> None:
        await c.publish_directory(pri, tree)
        name = pri.replace(":", "_")
        ws = await c.put_workspace(name, {"roots": [pri], "strategy": "latest", "pin": "-1d",
                                          "prefer": ["approved"], "overrides": [f"{pri}@1"]})
        assert ws["revision"] == 1 and ws["pin"].endswith("Z")
        again = await c.put_workspace(name, {**ws, "pin": None})
        assert again["revision"] == 2 and again["pin"] is None
        assert (await c.get_workspace(name))["pin"] is None
        assert [w["revision"] for w in await c.workspace_history(name)] == [1, 2]
        assert name in [w["name"] for w in await c.list_workspaces()]
        await c.delete_workspace(name)
        with pytest.raises(NotFound):
            await c.get_snapshot("0123456789abcdef")
        record = {"workspace": name, "resolved": {pri: 1}}
        first = await c.create_snapshot(record)
        assert (await c.create_snapshot(record))["id"] == first["id"]
        assert (await c.get_snapshot(first["id"]))["record"] == record

    arun(url, main)


def test_outputs_and_version_origins(url: str, pri: str, tree: Path) -> None:
    name = pri.replace(":", "_")
    other = pri.replace("lgt", "comp")

    async def main(c: PVCClient) -> None:
        first = await c.put_workspace(name, {"roots": [], "outputs": [pri, other, pri]})
        assert first["outputs"] == [pri, other]
        ws = await c.put_workspace(name, {**first, "outputs": [pri]})
        assert ws["revision"] == 2 and [w["outputs"] for w in await c.workspace_history(name)] == [[pri, other], [pri]]
        found = await c.declared_outputs(pri)
        assert found["pri"] == pri and [(w["name"], w["revision"]) for w in found["workspaces"]] == [(name, 2)]
        assert (await c.declared_outputs(other))["workspaces"] == []
        assert [w["name"] for w in (await c.declared_outputs(other, as_of=first["changed_at"]))["workspaces"]] == [name]

        v1 = await c.publish_directory(pri, tree, workspace={"name": name, "revision": 1})
        assert v1["workspace"] == {"name": name, "revision": 1}
        v2 = await c.publish_directory(pri, tree, workspace=ws)
        assert v2["workspace"] == {"name": name, "revision": 2}
        assert (await c.get_version(pri, 1))["workspace"] == {"name": name, "revision": 1}
        assert [v["workspace"]["revision"] for v in await c.list_versions(pri)] == [1, 2]
        with pytest.raises(NotFound, match="no revision 3"):
            await c.publish_directory(pri, tree, workspace={"name": name, "revision": 3})
        with pytest.raises(NotFound, match="no workspace"):
            await c.publish(pri, [], workspace={"name": name + "_nobody", "revision": 1})
        assert [v["number"] for v in await c.list_versions(pri)] == [1, 2]

    arun(url, main)


def test_tokens_and_roles(tmp_path: Path) -> None:
    tokens = {"read-token-1": ("read", "viewer"), "publish-token-1": ("publish", "lighter"), "admin-token-1": ("admin", "boss")}
    with running_service(tmp_path / "data", tokens=tokens) as svc:
        src = make_tree(tmp_path / "src")
        pri = "tok-lgt:walter"
        with pytest.raises(Unauthorized) as anonymous:
            arun(svc.url, lambda c: c.list_products())
        assert anonymous.value.status == 401
        assert arun(svc.url, lambda c: c.health())["status"] == "ok"
        with pytest.raises(Unauthorized) as reader:
            arun(svc.url, lambda c: c.publish_directory(pri, src), token="read-token-1")
        assert reader.value.status == 403
        version = arun(svc.url, lambda c: c.publish_directory(pri, src, author="ignored"), token="publish-token-1")
        assert version["author"] == "lighter"
        with pytest.raises(Unauthorized):
            arun(svc.url, lambda c: c.rename(pri, "tok-lgt:walt"), token="publish-token-1")
        assert arun(svc.url, lambda c: c.rename(pri, "tok-lgt:walt"), token="admin-token-1")["pri"] == "tok-lgt:walt"


def test_service_going_away_is_unavailable(pvc_service: Service) -> None:
    url = pvc_service.url
    assert arun(url, lambda c: c.health())["status"] == "ok"
    pvc_service.stop()
    with pytest.raises(Unavailable):
        arun(url, lambda c: c.list_products(), retries=1)


def test_many_directories_publish_together_or_not_at_all(url: str, tmp_path: Path) -> None:
    trees = {}
    for i in range(3):
        d = tmp_path / f"p{i}"
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "small.dat").write_bytes(os.urandom(100 + i))
        (d / "shared.dat").write_bytes(b"the same in every product")
        trees[f"many:p{i}-lgt:layout"] = d
    (tmp_path / "p2" / "large.bin").write_bytes(os.urandom((4 << 20) + 1))  # travels alone, first
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ok.dat").write_bytes(b"fine")
    os.mkfifo(broken / "pipe")

    async def main(c: PVCClient) -> None:
        with pytest.raises(InvalidInput, match="only files, directories and symlinks"):
            await c.publish_directories([Publication("many:ok-lgt:layout", trees["many:p0-lgt:layout"]),
                                         Publication("many:broken-lgt:layout", broken)])
        with pytest.raises(InvalidInput, match="given twice"):
            await c.publish_directories([Publication("many:p0-lgt:layout", trees["many:p0-lgt:layout"])] * 2)
        # refused by the service, at the second version: the first is not published either
        with pytest.raises(PVCError, match=r"publications\[1\]"):
            await c.publish_directories([Publication("many:ok-lgt:layout", trees["many:p0-lgt:layout"]),
                                         Publication("many:dep-lgt:layout", trees["many:p1-lgt:layout"],
                                                     dependencies=["many:nothing-lgt:layout@3"])])
        with pytest.raises(NotFound):  # nothing of the refused calls was published
            await c.resolve("many:ok-lgt:layout")
        versions = await c.publish_directories([Publication(pri, d, labels=["published"])
                                                for pri, d in trees.items()])
        assert [v["ref"] for v in versions] == [f"{pri}@1" for pri in trees]
        for pri, d in trees.items():
            await c.materialize(f"{pri}@published", tmp_path / "out" / pri)
            assert describe(tmp_path / "out" / pri) == describe(d)

    arun(url, main)
