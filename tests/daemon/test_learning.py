"""A mount that knows what it touched: learning names, closures, root pages, partial re-resolution.

Driven in-process: the state and the root listing with plain data, the
learner against the real service through ``httpx.ASGITransport``.
"""

from __future__ import annotations

import errno

import httpx
import pytest
import trio

from pvc_client import PVCClient, Unavailable, format_time, from_micros
from prodfs.mount.learning import Learner
from prodfs.mount.namespace import K_NAME, K_TOP, FsError, Namespace
from prodfs.mount.root_listing import RootListing
from prodfs.mount.state import MountState, NameError_, Unknown
from prodfs.resolution.context import Context
from prodfs.resolution.graph import Graph
from prodfs.storage.versions import VersionStore

from tests.daemon.test_core import DAY, T0, diamond, product


def _answer(graph: Graph, roots: list[tuple[str, str | None]]) -> dict:
    """A /closure answer holding ``graph``'s products, with the given roots (pri None: unknown)."""
    doc = graph.to_json()
    doc["roots"] = [{"ref": ref, "pri": pri, "number": None} for ref, pri in roots]
    return doc


def _publish(pri: str, number: int, at_us: int, deps: tuple[str, ...] = ()) -> dict:
    t = format_time(from_micros(at_us))
    return {"kind": "publish", "pri": pri, "number": number, "created_at": t, "time": t,
            "dependencies": list(deps)}


def test_a_name_not_learned_is_unknown_until_the_service_answers():
    state = MountState(Context(), Graph(), complete=set())
    with pytest.raises(Unknown) as exc:
        state.view("s-p1@2")
    assert exc.value.pri == "s-p1"
    assert state.unknown_pri("s-p1@2") == "s-p1"
    assert state.unknown_pri("s-p1@01") is None  # malformed: view says EINVAL, nothing to ask
    one = Graph()
    one.add(diamond().products["s-p1"])
    added = state.learned(_answer(one, [("s-p1", "s-p1"), ("s-gone", None)]), complete=False)
    assert added == ["s-p1"] and state.view("s-p1@2").number == 2
    assert state.view("s-p1").number == 3 and "s-p1" not in state.complete
    # the service said no: a plain ENOENT from now on, no second question
    assert state.unknown_pri("s-gone") is None
    with pytest.raises(NameError_) as no:
        state.view("s-gone")
    assert not isinstance(no.value, Unknown)


def test_feed_events_of_products_not_followed_cost_nothing_but_clear_misses():
    state = MountState(Context(), Graph(), complete=set())
    state.missing["s-new"] = True
    assert state.apply_event(_publish("s-other", 1, T0)) == set()
    assert len(state.graph) == 0  # not learned from the feed: the mount never asked for it
    assert state.apply_event(_publish("s-new", 1, T0)) == {"s-new"}
    assert state.unknown_pri("s-new") == "s-new"  # asked again at its next lookup
    state.missing["s-renamed"] = True
    touched = state.apply_event({"kind": "rename", "pri": "s-renamed", "old_pri": "s-elsewhere",
                                 "time": format_time(from_micros(T0))})
    assert touched == {"s-renamed"} and state.unknown_pri("s-renamed") == "s-renamed"


def test_a_change_outside_the_closure_does_not_run_the_resolver():
    g = diamond()
    complete = {"s-p4", "s-p2", "s-p3", "s-p1"}
    outside = product("s-x", 9, {1: (T0, ())})
    g.add(outside)
    state = MountState(Context(roots=("s-p4",), strategy="highest"), g, complete=complete)
    assert state.view("s-x").number == 1 and state.view("s-p1").number == 2
    before = state.resolution
    state.apply_event(_publish("s-x", 2, T0 + DAY))
    assert state.reresolve({"s-x"}) == {"s-x"}
    assert state.resolution is before  # the graph's choices were not made again
    assert state.view("s-x").number == 2
    # inside the closure: resolved again, and what moved is said
    state.apply_event(_publish("s-p1", 4, T0 + 4 * DAY))
    state.apply_event(_publish("s-p4", 2, T0 + 5 * DAY, ("s-p1@4",)))
    assert state.reresolve({"s-p1", "s-p4"}) >= {"s-p1", "s-p4"}
    assert state.resolution is not before and state.view("s-p1").number == 4


def test_new_dependencies_of_the_closure_are_asked_for():
    g = diamond()
    state = MountState(Context(roots=("s-p4",)), g, complete=set(g.products))
    state.apply_event(_publish("s-p4", 2, T0 + 5 * DAY, ("s-p1@3", "s-new@1")))
    assert state.incomplete_deps({"s-p4"}) == {"s-new"}
    # a product learned by name alone is not complete: its closure is wanted too
    state.graph.add(product("s-alone", 7, {1: (T0, ("s-deeper@1",))}))
    state.apply_event(_publish("s-p2", 3, T0 + 5 * DAY, ("s-alone@1",)))
    assert state.incomplete_deps({"s-p2"}) == {"s-alone"}
    assert state.incomplete_deps({"s-alone"}) == set()  # outside the closure: nothing to complete


def _names(n: int) -> list[str]:
    return [f"s-p{i:05d}" for i in range(n)]


def _listing(names: list[str], page: int, fail_from: int | None = None, known: list[str] | None = None):
    calls: list[str | None] = []

    async def fetch(after: str | None) -> tuple[list[str], str | None]:
        calls.append(after)
        if fail_from is not None and len(calls) > fail_from:
            raise Unavailable("PVC is away")
        start = 0 if after is None else names.index(after) + 1
        part = names[start:start + page]
        return part, (part[-1] if start + page < len(names) else None)

    async def make(part: list[str]) -> list:
        return [(n.encode(), n) for n in part]

    async def tail() -> list:
        return [(b"s-output", "s-output")]

    listing = RootListing(fetch, make, [(b".prodfs", ".prodfs")], tail, lambda: list(known or ()))
    return listing, calls


async def _read_all(listing: RootListing, step: int) -> list[bytes]:
    """What READDIR calls of ``step`` entries each would get, from position 0 to the end."""
    out: list[bytes] = []
    pos = 0
    while part := await listing.at(pos):
        got = part[:step]
        out += [name for name, _ in got]
        pos += len(got)
    return out


def test_root_listing_pages_and_positions():
    names = _names(2500)
    listing, calls = _listing(names, page=1000)
    got = trio.run(_read_all, listing, 37)
    assert got == [b".prodfs", *(n.encode() for n in names), b"s-output"]
    assert calls == [None, names[999], names[1999]]  # each page asked once, in order

    async def seek() -> None:
        # back to a position far behind: pages no longer kept are asked again with their own key
        for k in range(20):  # more pages than are kept
            await listing.at(1 + (k % 3) * 1000)
        assert (await listing.at(1500))[0][0] == names[1499].encode()
        assert (await listing.at(2501))[0][0] == b"s-output"
        assert await listing.at(2502) == []

    trio.run(seek)


def test_root_listing_without_the_service_lists_what_is_known_or_fails():
    listing, _ = _listing(_names(10), page=4, fail_from=0, known=["s-known"])
    assert trio.run(_read_all, listing, 10) == [b".prodfs", b"s-known", b"s-output"]
    assert listing.offline
    # the service went away after the first page: the listing is not cut short silently
    broken, _ = _listing(_names(10), page=4, fail_from=1)

    async def go() -> None:
        assert len(await broken.at(1)) == 4
        with pytest.raises(Unavailable):
            await broken.at(5)

    trio.run(go)


def test_namespace_lists_unlearned_names_as_names_and_learns_on_lookup():
    learned: list[str] = []
    g = Graph()
    state = MountState(Context(), g, complete=set())

    async def learn(pri: str) -> None:
        learned.append(pri)
        one = Graph()
        one.add(diamond().products["s-p1"])
        state.learned(_answer(one, [(pri, pri if pri == "s-p1" else None)]), complete=False)

    ns = Namespace(state, VersionStore(None, None))  # type: ignore[arg-type]
    ns.learn = learn
    node = ns.root_entry("s-p1")
    assert node is not None and node.kind == K_NAME
    with pytest.raises(FsError) as exc:
        trio.run(ns.lookup, node.ino, "child")
    assert exc.value.errno == errno.ESTALE  # the kernel is to look the name up again
    top = trio.run(ns.lookup, 1, "s-p1")
    assert top.kind == K_TOP and top.view.number == 3 and learned == ["s-p1"]
    assert ns.root_entry("s-p1").kind == K_TOP
    with pytest.raises(FsError) as exc:
        trio.run(ns.lookup, 1, "s-gone")
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(FsError):
        trio.run(ns.lookup, 1, "s-gone")
    assert learned == ["s-p1", "s-gone"]  # a miss is asked once


def test_learner_asks_once_per_name_and_fails_fast_when_degraded(tmp_path):
    from pvc_service.app import create_app
    from pvc_service.config import ServiceConfig

    app = create_app(ServiceConfig(data_dir=tmp_path / "pvc"))

    async def go() -> None:
        async with PVCClient("http://pvc", transport=httpx.ASGITransport(app=app)) as client:
            for pri in ("s-a", "s-b"):
                await client.publish(pri, [], dependencies=["s-a@1"] if pri == "s-b" else [])
            state = MountState(Context(), Graph(), complete=set())
            reason: list[str] = []
            learner = Learner(client, state, degraded=lambda: reason[0] if reason else None, changed=lambda: None)
            async with trio.open_nursery() as n:
                for _ in range(20):
                    n.start_soon(learner.name, "s-b")
            assert learner.requests == 1 and state.graph.get("s-b") is not None
            assert state.graph.get("s-a") is None  # the product alone, not its dependencies
            await learner.name("s-missing")
            assert "s-missing" in state.missing
            assert await learner.closures(["s-b"]) == ["s-a"]
            assert {"s-a", "s-b"} <= state.complete
            # an answer older than what the feed has gone past is asked again (three times at most)
            state.seen = 10**9
            asked = learner.requests
            await learner.name("s-late")
            assert learner.requests - asked == 3 and "s-late" in state.missing
            state.seen = 0
            names, following = await learner.root_page(None)
            assert names == ["s-a", "s-b"] and following is None
            reason.append("PVC is away")
            with pytest.raises(Unavailable):
                await learner.name("s-c")
            assert learner.requests == 7  # nothing was asked while degraded

    try:
        trio.run(go)
    finally:
        app.state.pvc.db.dispose()
