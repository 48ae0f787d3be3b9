"""`VersionStore` loading many manifests at once: companions from disk, one batch request, fallbacks."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import trio

from pvc_client import NotFound, PVCError, format_time, from_micros
from prodfs.mount.state import MountState, View
from prodfs.resolution import Context, Graph
from prodfs.storage import VersionStore, Want

T0 = 1_700_000_000_000_000


def _want(i: int) -> Want:
    return Want(f"s-p{i:03d}", 1, 100 + i, T0 + i)


def _version(want: Want) -> dict:
    data = want.pri.encode()
    return {"pri": want.pri, "number": want.number, "product_id": want.product_id,
            "created_at": format_time(from_micros(want.created_us)),
            "manifest": [{"path": "f", "type": "file", "mode": 0o644, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}]}


class Service:
    """Answers the versions of `_want`; counts single and batch requests."""

    def __init__(self) -> None:
        self.singles: list[tuple[str, int]] = []
        self.batches: list[list[tuple[str, int]]] = []
        self.fail_batches = False
        self.known = {_want(i).key: _want(i) for i in range(50)}

    async def one(self, pri: str, number: int) -> dict:
        self.singles.append((pri, number))
        await trio.sleep(0.01)
        if (pri, number) not in self.known:
            raise NotFound(f"no version {pri}@{number}")
        return _version(self.known[(pri, number)])

    async def many(self, refs: list[tuple[str, int]]) -> list[dict | None]:
        self.batches.append(list(refs))
        await trio.sleep(0.01)
        if self.fail_batches:
            raise PVCError("POST /versions/batch: 503")
        return [_version(self.known[r]) if r in self.known else None for r in refs]


def _store(svc: Service, cache: Path | None) -> VersionStore:
    return VersionStore(svc.one, cache, fetch_many=svc.many)


def _get(store: VersionStore, want: Want, companions: list[Want]):
    return trio.run(lambda: store.get(*want, companions=companions))


def test_one_request_for_the_wanted_one_and_its_companions(tmp_path: Path) -> None:
    svc = Service()
    store = _store(svc, tmp_path)
    tree = _get(store, _want(0), [_want(i) for i in range(1, 6)] + [_want(0), _want(1)])
    assert tree.pri == "s-p000" and tree.entry("f") is not None
    assert svc.batches == [[_want(i).key for i in range(6)]] and svc.singles == []  # repeats asked once
    assert all(store.peek(*_want(i).key) for i in range(6))
    assert store.stats.manifests_fetched == 6 and store.stats.manifest_requests == 1
    assert len(list((tmp_path / "manifests").rglob("*.json"))) == 6  # all cached on disk

    # loaded ones are no companions: the next miss asks only for what is not loaded
    _get(store, _want(6), [_want(i) for i in range(1, 9)])
    assert svc.batches[1] == [_want(6).key, _want(7).key, _want(8).key]
    # no companions: the single GET, as before
    _get(store, _want(9), [])
    assert svc.singles == [_want(9).key] and store.stats.manifest_requests == 3


def test_companions_on_disk_are_read_not_fetched(tmp_path: Path) -> None:
    svc = Service()
    _get(_store(svc, tmp_path), _want(0), [_want(1), _want(2)])  # fills the disk cache with 0..2
    svc.batches.clear()

    # the wanted one missing from disk: one request for it and the companions missing too
    fresh = _store(svc, tmp_path)
    _get(fresh, _want(3), [_want(1), _want(2), _want(4)])
    assert svc.batches == [[_want(3).key, _want(4).key]]
    assert fresh.peek(*_want(1).key) is not None and fresh.stats.manifests_fetched == 2

    # the wanted one on disk: no request at all, companions on disk loaded, the others left
    fresh = _store(svc, tmp_path)
    _get(fresh, _want(0), [_want(1), _want(5)])
    assert len(svc.batches) == 1 and svc.singles == [] and fresh.stats.manifest_requests == 0
    assert fresh.peek(*_want(1).key) is not None and fresh.peek(*_want(5).key) is None


def test_a_failed_batch_falls_back_to_the_single_get(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    svc = Service()
    svc.fail_batches = True
    store = _store(svc, tmp_path)
    with caplog.at_level(logging.DEBUG, logger="prodfs.storage.versions"):
        assert _get(store, _want(0), [_want(1), _want(2)]).pri == "s-p000"
        assert _get(store, _want(3), [_want(4)]).pri == "s-p003"
    assert svc.singles == [_want(0).key, _want(3).key]
    assert store.peek(*_want(1).key) is None  # a companion is only lost for now: a later miss loads it
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "fetching 3 manifests at once failed" in infos[0].getMessage()

    # an answer that is not what was asked (out of order) is no answer
    svc.fail_batches = False
    original = svc.many

    async def shuffled(refs: list[tuple[str, int]]) -> list[dict | None]:
        return list(reversed(await original(refs)))

    svc.many = shuffled  # type: ignore[method-assign]
    store = VersionStore(svc.one, None, fetch_many=svc.many)
    assert _get(store, _want(5), [_want(6)]).pri == "s-p005" and svc.singles[-1] == _want(5).key
    assert store.peek(*_want(6).key) is None

    # the wanted one unknown: the single GET says why; an unknown companion is no error
    svc.many = original  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        _get(store, Want("s-gone", 1, 7, T0), [_want(7)])
    assert _get(store, _want(8), [Want("s-gone", 1, 7, T0)]).pri == "s-p008"


def test_concurrent_gets_share_one_batch(tmp_path: Path) -> None:
    svc = Service()
    store = _store(svc, None)
    trees: dict[str, object] = {}

    async def get(want: Want, companions: list[Want]) -> None:
        trees[want.pri] = await store.get(*want, companions=companions)

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(get, _want(0), [_want(1), _want(2)])
            await trio.sleep(0)
            n.start_soon(get, _want(1), [])  # a companion of the batch in flight: waits for it
            n.start_soon(get, _want(0), [_want(3)])  # the same miss: waits too, asks nothing
            n.start_soon(get, _want(4), [_want(2), _want(5)])  # _want(2) is loading: not asked again

    trio.run(main)
    assert sorted(svc.batches) == [[_want(0).key, _want(1).key, _want(2).key], [_want(4).key, _want(5).key]]
    assert svc.singles == [] and set(trees) == {"s-p000", "s-p001", "s-p004"}

    # a companion the batch does not load (the wanted one came from disk) is loaded by its own get
    async def left_over(tmp: Path) -> None:
        first = _store(svc, tmp)
        await first.get(*_want(10))
        store = _store(svc, tmp)
        async with trio.open_nursery() as n:
            n.start_soon(lambda: store.get(*_want(10), companions=[_want(11)]))
            await trio.sleep(0)
            n.start_soon(lambda: store.get(*_want(11)))
        assert store.peek(*_want(11).key) is not None

    svc.singles.clear()
    trio.run(left_over, tmp_path)
    assert svc.singles == [_want(10).key, _want(11).key]


def test_snapshot_companions_are_the_nearest_names_not_loaded() -> None:
    products = {}
    for i in range(20):
        w = _want(i)
        products[w.pri] = {"product_id": w.product_id, "created_at": format_time(from_micros(w.created_us)),
                           "versions": [{"number": 1, "created_at": format_time(from_micros(w.created_us)),
                                         "dependencies": []}], "labels": {}, "aliases": []}
    graph = Graph.from_json({"products": products, "cursor": 0})
    state = MountState(Context(), graph, snapshot={"choices": {pri: 1 for pri in products}})
    w = _want(10)
    view = View(w.pri, w.pri, 1, w.product_id, w.created_us, "versionless", "snapshot")
    loaded = {_want(9).key, _want(12).key}
    near = state.snapshot_companions(view, 4, lambda pri, n: (pri, n) in loaded)
    assert [c.pri for c in near] == ["s-p011", "s-p008", "s-p013", "s-p007"]
    assert near[0] == _want(11)
    assert len(state.snapshot_companions(view, 100, lambda pri, n: False)) == 19
    live = MountState(Context(), graph)
    assert live.snapshot_companions(view, 4, lambda pri, n: False) == []


def test_behind_a_mount_the_wanted_one_comes_alone_and_its_companions_after(tmp_path: Path) -> None:
    svc = Service()
    gate = trio.Event()  # the companions' batch answers only once the test opens it

    async def gated(refs: list[tuple[str, int]]) -> list[dict | None]:
        await gate.wait()
        return await svc.many(refs)

    store = VersionStore(svc.one, tmp_path, fetch_many=gated)
    companions = [_want(i) for i in range(1, 6)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store.behind = nursery.start_soon
            first = await store.get(*_want(0), companions=companions)
            # answered with its own manifest: the companions' batch is on its way, not awaited
            assert first.pri == "s-p000" and svc.singles == [_want(0).key]
            assert store.peek(*_want(1).key) is None and store.known(*_want(1).key)
            # a companion's get meanwhile waits for that batch rather than asking again
            gate.set()
            second = await store.get(*_want(1), companions=companions)
            assert second.pri == "s-p001"
        assert svc.batches == [[c.key for c in companions]] and svc.singles == [_want(0).key]
        assert all(store.peek(*c.key) for c in companions)
        assert store.stats.manifest_requests == 2 and store.stats.manifests_fetched == 6

    trio.run(main)


def test_behind_a_mount_a_failed_companions_batch_leaves_each_to_its_get(tmp_path: Path) -> None:
    svc = Service()
    svc.fail_batches = True
    store = _store(svc, None)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store.behind = nursery.start_soon
            await store.get(*_want(0), companions=[_want(1), _want(2)])
            tree = await store.get(*_want(2))  # the batch failed: this one is fetched alone
            assert tree.pri == "s-p002"
        assert svc.singles == [_want(0).key, _want(2).key] and len(svc.batches) == 1

    trio.run(main)


def test_behind_a_mount_companions_on_disk_are_settled_nearest_first(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from prodfs.storage import versions as versions_module

    svc = Service()
    everything = [_want(i) for i in range(40)]
    _get(_store(svc, tmp_path), everything[0], everything[1:])  # all 40 on disk
    svc.batches.clear()
    svc.singles.clear()

    reads: list[int] = []
    gate = threading.Event()  # the disk reads after the first few wait until the test opens it
    read_raw = versions_module._read_raw

    def gated(paths: list) -> dict:
        reads.append(len(paths))
        if len(reads) > 2:  # the wanted one's, then the nearest companions'
            assert gate.wait(10)
        return read_raw(paths)

    monkeypatch.setattr(versions_module, "_read_raw", gated)
    store = _store(svc, tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store.behind = nursery.start_soon
            await store.get(*everything[0], companions=everything[1:])
            with trio.fail_after(5):  # the nearest companion does not wait for the other 35
                assert (await store.get(*everything[1], companions=everything)).pri == "s-p001"
            assert store.peek(*everything[39].key) is None and store.known(*everything[39].key)
            gate.set()
            assert (await store.get(*everything[39])).pri == "s-p039"
        assert all(store.peek(*w.key) for w in everything)
        assert svc.singles == [] and svc.batches == [] and sum(reads) == 40 and reads[:2] == [1, 4]

    trio.run(main)


def test_behind_a_mount_a_damaged_companion_on_disk_is_fetched_again(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    svc = Service()
    _get(_store(svc, tmp_path), _want(0), [_want(1), _want(2)])
    damaged = next((tmp_path / "manifests" / str(_want(1).product_id)).iterdir())
    damaged.write_bytes(b'{"pri": "s-p001", "manifest": [')  # cut short
    svc.batches.clear()
    store = _store(svc, tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store.behind = nursery.start_soon
            await store.get(*_want(0), companions=[_want(1), _want(2)])
        assert svc.batches == [[_want(1).key]] and all(store.peek(*_want(i).key) for i in range(3))

    with caplog.at_level(logging.WARNING, logger="prodfs.storage.versions"):
        trio.run(main)
    assert any("unusable" in r.getMessage() for r in caplog.records)
