"""The daemon's core driven in-process: names, namespace, version trees, blob cache."""

from __future__ import annotations

import errno
import hashlib
import io
import os

import pytest
import trio

from pvc_client import format_time, from_micros, parse_time, to_micros
from prodfs.storage.blob_cache import BlobCache, CorruptBlob, check_cache
from prodfs.resolution.context import Context
from prodfs.mount.control import ControlSnapshots
from prodfs.resolution.graph import Dep, Graph, ProductInfo, VersionInfo
from prodfs.mount.namespace import CONTROL_NAME, K_CONFLICT, K_FILE, K_TOP, ROOT, FsError, Namespace
from prodfs.mount.state import MountState
from prodfs.storage.versions import VersionStore

T0 = to_micros(parse_time("2026-01-01T00:00:00Z"))
DAY = 86400 * 1_000_000


def product(pri: str, pid: int, versions: dict[int, tuple[int, tuple[str, ...]]], labels=None, aliases=()):
    return ProductInfo(
        pri=pri, product_id=pid, created_us=min(t for t, _ in versions.values()),
        versions={n: VersionInfo(n, t, tuple(Dep.parse(d) for d in deps)) for n, (t, deps) in versions.items()},
        labels=dict(labels or {}), aliases=tuple(aliases),
    )


def diamond() -> Graph:
    g = Graph()
    g.add(product("s-p1", 1, {1: (T0, ()), 2: (T0 + DAY, ()), 3: (T0 + 3 * DAY, ())}, labels={"approved": 1}))
    g.add(product("s-p2", 2, {2: (T0 + DAY, ("s-p1@1",))}))
    g.add(product("s-p3", 3, {2: (T0 + DAY, ("s-p1@2",))}, aliases=("s-old3",)))
    g.add(product("s-p4", 4, {1: (T0 + 2 * DAY, ("s-p2@2", "s-p3@2"))}))
    return g


def manifest(pri: str, number: int, created_us: int) -> dict:
    data = f"{pri}@{number}".encode()
    return {
        "pri": pri, "number": number, "product_id": 1, "created_at": format_time(from_micros(created_us)),
        "manifest": [
            {"path": "d", "type": "dir", "mode": 0o755},
            {"path": "d/f.txt", "type": "file", "mode": 0o644, "size": len(data),
             "sha256": hashlib.sha256(data).hexdigest()},
            {"path": "link", "type": "symlink", "target": "d/f.txt"},
        ],
    }


class FakeService:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.fetches = 0

    async def version(self, pri: str, number: int) -> dict:
        self.fetches += 1
        await trio.sleep(0.01)
        p = self.graph.get(pri)
        return manifest(p.pri, number, p.versions[number].created_us)


def make_ns(context: Context, graph: Graph | None = None, **kw):
    graph = graph or diamond()
    svc = FakeService(graph)
    state = MountState(context, graph, **kw)
    return Namespace(state, VersionStore(svc.version, None)), svc


def test_root_names_resolve_by_context():
    ns, _ = make_ns(Context(roots=("s-p4",), strategy="highest"))
    top = ns.lookup_root("s-p1")
    assert top.kind == K_TOP and top.view.number == 2 and top.view.kind == "versionless"
    assert ns.lookup_root("s-p1@1").view.kind == "explicit"
    assert ns.lookup_root("s-p1@approved").view.number == 1
    assert ns.lookup_root("s-p1@latest").view.number == 3
    # the same name and version is the same inode; another name is another directory
    assert ns.lookup_root("s-p1").ino == top.ino
    assert ns.lookup_root("s-p1@2").ino != top.ino
    # aliases resolve to the renamed product
    assert ns.lookup_root("s-old3").view.pri == "s-p3"
    assert ns.lookup_root(CONTROL_NAME).ino == 2


@pytest.mark.parametrize("name, code", [
    ("nope", errno.ENOENT), ("s-nothing", errno.ENOENT), ("s-p1@9", errno.ENOENT),
    ("s-p1@nolabel", errno.ENOENT), ("s-p1@01", errno.EINVAL), ("s-p1@1.2", errno.EINVAL),
    ("s-p1@", errno.EINVAL), ("", errno.ENOENT), ("s-p1@X", errno.EINVAL),
])
def test_bad_root_names(name, code):
    ns, _ = make_ns(Context())
    with pytest.raises(FsError) as exc:
        ns.lookup_root(name)
    assert exc.value.errno == code


def test_pin_hides_later_versions_and_products():
    ns, _ = make_ns(Context(pin_us=T0 + DAY + 1))
    assert ns.lookup_root("s-p1").view.number == 2
    with pytest.raises(FsError):
        ns.lookup_root("s-p1@3")
    # what a root listing shows of the known products (when the service cannot be asked)
    assert ns.state.listing() == ["s-p1", "s-p2", "s-p3"]
    assert ns.root_entry("s-p4") is None  # nothing visible at the pin: not listed


def test_strict_conflict_is_eio_and_listed_as_such():
    ns, _ = make_ns(Context(roots=("s-p4",), strategy="strict"))
    with pytest.raises(FsError) as exc:
        ns.lookup_root("s-p1")
    assert exc.value.errno == errno.EIO and "s-p2@2" in str(exc.value)
    assert ns.root_entry("s-p1").kind == K_CONFLICT
    assert ns.lookup_root("s-p1@1").view.number == 1  # explicit paths are never affected


def test_version_tree_lookup_and_coalescing():
    ns, svc = make_ns(Context())
    top = ns.lookup_root("s-p2")

    async def go():
        results = []
        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(lambda: results.append(ns.lookup(top.ino, "d")))
        return results

    async def many():
        out = []

        async def one():
            out.append(await ns.lookup(top.ino, "d"))

        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(one)
        return out

    nodes = trio.run(many)
    assert svc.fetches == 1  # twenty concurrent misses, one request
    assert len({n.ino for n in nodes}) == 1
    f = trio.run(ns.lookup, nodes[0].ino, "f.txt")
    assert f.kind == K_FILE and ns.xattrs(f)["user.prodfs.pri"] == b"s-p2@2"
    with pytest.raises(FsError) as exc:
        trio.run(ns.lookup, top.ino, "missing")
    assert exc.value.errno == errno.ENOENT


def test_events_move_versionless_names():
    graph = diamond()
    ns, _ = make_ns(Context(), graph)
    state = ns.state
    assert ns.lookup_root("s-p2").view.number == 2
    state.record_use(ns.lookup_root("s-p2").view)
    touched = state.apply_event({"kind": "publish", "pri": "s-p2", "number": 3,
                                 "created_at": format_time(from_micros(T0 + 5 * DAY)), "dependencies": []})
    changed = state.reresolve()
    assert "s-p2" in touched and "s-p2" in changed
    assert "s-p2" in state.names_for(touched | changed)
    assert ns.lookup_root("s-p2").view.number == 3
    state.apply_event({"kind": "rename", "pri": "s-p2new", "old_pri": "s-p2", "time": format_time(from_micros(T0))})
    state.reresolve()
    assert ns.lookup_root("s-p2").view.pri == "s-p2new"


def test_snapshot_choices_are_fixed():
    graph = diamond()
    ns, _ = make_ns(Context(), graph, snapshot={"choices": {"s-p1": 1}})
    assert ns.lookup_root("s-p1").view.number == 1
    assert ns.lookup_root("s-p1").view.rule == "snapshot"
    assert not ns.state.names_can_change


# -- blob cache ---------------------------------------------------------------
class Blobs:
    def __init__(self, blobs: dict[str, bytes], corrupt: bool = False) -> None:
        self.blobs = blobs
        self.calls = 0
        self.corrupt = corrupt

    async def download(self, sha: str, sink: io.BufferedWriter) -> int:
        self.calls += 1
        await trio.sleep(0.01)
        data = self.blobs[sha]
        if self.corrupt:
            data = data[:-1] + b"!"
        sink.write(data)
        return len(data)


def _blob(n: int) -> tuple[str, bytes]:
    data = bytes([n % 256]) * (1000 + n)
    return hashlib.sha256(data).hexdigest(), data


def test_blob_cache_fetches_once_verifies_and_evicts(tmp_path):
    items = dict(_blob(i) for i in range(5))
    svc = Blobs(items)
    cache = BlobCache(tmp_path, svc.download, max_bytes=3500)
    sha0 = next(iter(items))

    async def go():
        paths = []

        async def one():
            paths.append(await cache.ensure(sha0, len(items[sha0])))

        async with trio.open_nursery() as n:
            for _ in range(10):
                n.start_soon(one)
        return paths

    paths = trio.run(go)
    assert svc.calls == 1 and len(set(paths)) == 1
    assert paths[0].read_bytes() == items[sha0]
    cache.acquire(sha0)  # an open file pins its blob
    for sha, data in items.items():
        trio.run(cache.ensure, sha, len(data))
    assert cache.size <= 3500 + max(len(d) for d in items.values())
    assert cache.path(sha0).exists()
    assert list(tmp_path.joinpath("tmp").iterdir()) == []


def test_blob_cache_refuses_and_replaces_corrupt_blobs(tmp_path):
    sha, data = _blob(1)
    bad = Blobs({sha: data}, corrupt=True)
    cache = BlobCache(tmp_path, bad.download)
    with pytest.raises(CorruptBlob):
        trio.run(cache.ensure, sha, len(data))
    assert not cache.path(sha).exists() and list((tmp_path / "tmp").iterdir()) == []
    good = Blobs({sha: data})
    cache = BlobCache(tmp_path, good.download)
    trio.run(cache.ensure, sha, len(data))
    # corrupt the cached copy: a new process re-verifies it before serving
    cache.path(sha).write_bytes(b"x" * len(data))
    cache2 = BlobCache(tmp_path, good.download)
    path = trio.run(cache2.ensure, sha, len(data))
    assert path.read_bytes() == data and good.calls == 2


def test_blob_cache_keeps_a_bounded_set_of_verified_fds(tmp_path):
    items = dict(_blob(i) for i in range(4))
    svc = Blobs(items)
    cache = BlobCache(tmp_path, svc.download, max_bytes=2500, max_fds=2)
    shas = list(items)
    fd = trio.run(cache.open_fd, shas[0], len(items[shas[0]]))
    assert os.pread(fd, 100_000, 0) == items[shas[0]]
    assert trio.run(cache.open_fd, shas[0], len(items[shas[0]])) == fd  # kept, no new open
    for sha in shas[1:3]:
        trio.run(cache.open_fd, sha, len(items[sha]))
    assert cache.usage()["fds"] == 2  # the least recently used one was closed ...
    with pytest.raises(OSError):
        os.fstat(fd)
    # ... and a blob with a kept fd is never evicted, as with an open file
    trio.run(cache.open_fd, shas[3], len(items[shas[3]]))
    assert cache.path(shas[3]).exists() and cache.path(shas[2]).exists()
    assert cache.usage()["open"] == 2

    # changed in place after it was verified: checked again (and refetched), never served as is
    cache.path(shas[3]).write_bytes(b"x" * len(items[shas[3]]))
    calls = svc.calls
    fd = trio.run(cache.open_fd, shas[3], len(items[shas[3]]))
    assert os.pread(fd, 100_000, 0) == items[shas[3]] and svc.calls == calls + 1
    # removed behind the daemon's back: fetched again rather than read from the unlinked file
    cache.path(shas[3]).unlink()
    fd = trio.run(cache.open_fd, shas[3], len(items[shas[3]]))
    assert cache.path(shas[3]).read_bytes() == items[shas[3]] and svc.calls == calls + 2
    cache.close()
    assert cache.usage()["fds"] == 0 and cache.usage()["open"] == 0


def _count_hashes(monkeypatch) -> list[str]:
    import prodfs.storage.blob_cache as bc

    hashed: list[str] = []
    real = bc.sha256_file

    def counting(path):
        if "/blobs/" in str(path):  # a cached blob, not a download being checked
            hashed.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(bc, "sha256_file", counting)
    return hashed


def _filled_cache(path, n: int = 3) -> tuple[dict[str, bytes], Blobs]:
    """A cache at ``path`` holding ``n`` blobs, fetched and hashed by a process now gone."""
    items = dict(_blob(i) for i in range(n))
    svc = Blobs(items)
    cache = BlobCache(path, svc.download)
    for sha, data in items.items():
        trio.run(cache.ensure, sha, len(data))
    cache.close()
    return items, svc


def test_blob_cache_trusts_what_another_process_hashed_while_unchanged(tmp_path, monkeypatch):
    items, svc = _filled_cache(tmp_path)
    hashed = _count_hashes(monkeypatch)
    a, b, c = items
    # a new process (a new daemon, a render job) serves them without hashing again ...
    second = BlobCache(tmp_path, svc.download)
    fd = trio.run(second.open_fd, a, len(items[a]))
    assert os.pread(fd, 100_000, 0) == items[a] and hashed == [] and svc.calls == 3
    # ... unless its file changed since: rewritten with the same size and mtime,
    # or only its mtime put back, the ctime tells, and it is hashed (and refetched)
    st = os.stat(second.path(b))
    second.path(b).write_bytes(b"y" * len(items[b]))
    os.utime(second.path(b), ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(second.path(c), ns=(st.st_atime_ns, os.stat(second.path(c)).st_mtime_ns))
    assert trio.run(second.ensure, b, len(items[b])).read_bytes() == items[b]
    assert trio.run(second.ensure, c, len(items[c])).read_bytes() == items[c]
    assert hashed == [b, c] and svc.calls == 4  # b was corrupt, c only touched
    second.close()
    # per-mount verification hashes every blob at its first use, ledger or not
    hashed.clear()
    third = BlobCache(tmp_path, svc.download, trust_ledger=False)
    for sha, data in items.items():
        trio.run(third.ensure, sha, len(data))
    assert sorted(hashed) == sorted(items)
    third.close()


def test_trusted_signature_is_what_the_c_read_path_must_find_and_costs_no_hash(tmp_path, monkeypatch):
    """What the daemon hands the C read path: the signature a verified file had, read from the ledger."""
    from prodfs.storage.ledger import signature_of

    items, svc = _filled_cache(tmp_path)
    hashed = _count_hashes(monkeypatch)
    a, b, c = items
    cache = BlobCache(tmp_path, svc.download)
    assert cache.trusted_signatures([a]) == {a: signature_of(cache.path(a))}
    assert os.fsdecode(cache.path_bytes(a)) == str(cache.path(a))
    cache.path(b).write_bytes(b"y" * len(items[b]))  # changed since: no longer the file the ledger vouches for
    got = cache.trusted_signatures([a, b, "0" * 64, c])  # one ledger query
    assert sorted(got) == sorted([a, b, c])  # one never fetched is not there
    assert got[b] != signature_of(cache.path(b))  # the C read path will find the file changed
    assert hashed == [] and svc.calls == 3  # nothing hashed, nothing fetched: that is `ensure`'s job
    # ... which checks b, finds it corrupt and refetches it: the new file is the trusted one
    assert trio.run(cache.ensure, b, len(items[b])).read_bytes() == items[b]
    assert hashed == [b] and svc.calls == 4
    assert cache.trusted_signatures([b]) == {b: signature_of(cache.path(b))}
    cache.close()
    untrusting = BlobCache(tmp_path, svc.download, trust_ledger=False)
    assert untrusting.trusted_signatures([a, b]) == {}  # per-mount: only what this process hashed
    trio.run(untrusting.ensure, a, len(items[a]))
    assert untrusting.trusted_signatures([a, b]) == {a: signature_of(cache.path(a))}
    untrusting.close()


def test_fsck_finds_what_the_ledger_cannot_see(tmp_path):
    """Bytes changed under an unchanged signature (bit rot): only a full check catches it."""
    from prodfs.storage.ledger import Ledger, signature_of

    items, svc = _filled_cache(tmp_path)
    rotten = list(items)[1]
    path = tmp_path / "blobs" / rotten[:2] / rotten
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))
    ledger = Ledger(tmp_path / "verified.sqlite")
    ledger.put(rotten, signature_of(path))  # as if the disk had flipped the bit itself
    ledger.close()
    report = check_cache(tmp_path)
    assert (report.blobs, report.corrupt) == (3, [rotten]) and not path.exists()
    assert check_cache(tmp_path).corrupt == []
    again = BlobCache(tmp_path, svc.download)
    assert trio.run(again.ensure, rotten, len(items[rotten])).read_bytes() == items[rotten]
    again.close()


def test_a_busy_ledger_skips_a_record_and_never_stalls(tmp_path):
    """Another process writing (a second mount, prodfs fsck) costs a record, not the daemon's loop."""
    import time

    from prodfs.storage.ledger import Ledger

    sig = (1, 2, 3, 4)
    ours, theirs = Ledger(tmp_path / "l.sqlite"), Ledger(tmp_path / "l.sqlite")
    theirs._db.execute("BEGIN IMMEDIATE")  # holds the write lock
    t0 = time.monotonic()
    ours.put("a" * 64, sig)
    assert time.monotonic() - t0 < 2
    assert ours.get("a" * 64) is None  # skipped, and the ledger is still in use:
    theirs._db.execute("COMMIT")
    ours.put("a" * 64, sig)
    assert ours.get("a" * 64) == sig and theirs.get("a" * 64) == sig
    ours.close()
    theirs.close()


def test_blob_cache_survives_an_unusable_ledger(tmp_path, caplog):
    sha, data = _blob(2)
    (tmp_path / "verified.sqlite").write_bytes(b"not a database" * 100)
    cache = BlobCache(tmp_path, Blobs({sha: data}).download)
    assert trio.run(cache.ensure, sha, len(data)).read_bytes() == data
    assert "ledger" in caplog.text


def test_control_snapshots_live_until_forgotten():
    renders = iter(range(100))
    snaps = ControlSnapshots(lambda name: f"{name}:{next(renders)}".encode())
    a, b = snaps.take("stats.json"), snaps.take("stats.json")
    assert a.ino != b.ino and snaps.owns(a.ino) and not snaps.owns(ROOT)
    assert (a.data, b.data) == (b"stats.json:0", b"stats.json:1")
    assert snaps.get(a.ino) is a and len(snaps) == 2
    a.lookups += 1  # looked up twice: forgotten only when both are
    snaps.forget(a.ino, 1)
    assert snaps.get(a.ino) is a
    snaps.forget(a.ino, 1)
    snaps.forget(b.ino, 1)
    assert snaps.get(a.ino) is None and len(snaps) == 0
    snaps.forget(12345, 1)  # unknown: ignored


def test_manifest_disk_cache_is_per_store_version(tmp_path):
    """Two services with the same product id and number share a cache dir: never mix them."""
    def fetcher(tag: str, created_us: int):
        async def fetch(pri: str, number: int) -> dict:
            data = manifest(pri, number, created_us)
            data["manifest"][1]["path"] = f"d/{tag}.txt"
            return data
        return fetch

    a = VersionStore(fetcher("a", T0), tmp_path)
    b = VersionStore(fetcher("b", T0 + 1), tmp_path)
    ta = trio.run(a.get, "s-x", 1, 7, T0)
    tb = trio.run(b.get, "s-x", 1, 7, T0 + 1)
    assert "a.txt" in ta.children("d") and "b.txt" in tb.children("d")
    # a new process finds each on disk, still apart
    async def never(pri, number):
        raise AssertionError("should come from the disk cache")
    c = VersionStore(never, tmp_path)
    assert "a.txt" in trio.run(c.get, "s-x", 1, 7, T0).children("d")
    assert "b.txt" in trio.run(VersionStore(never, tmp_path).get, "s-x", 1, 7, T0 + 1).children("d")


def test_fetch_ahead_plan_takes_the_next_names_first_within_the_budget() -> None:
    from prodfs.storage.blob_cache import fetch_ahead_plan
    from pvc_client import PACK_BLOB_LIMIT, Entry

    def f(name: str, size: int, sha: str | None = None) -> Entry:
        return Entry(path=f"frames/{name}", type="file", mode=0o644, size=size, sha256=sha or name[-1] * 64)

    listing = [f("a", 10), f("b", 10), f("c", 10), f("d", 10), f("e", PACK_BLOB_LIMIT + 1), f("f", 0),
               f("g", 10, sha="c" * 64), Entry(path="frames/sub", type="dir", mode=0o755)]
    wanted = listing[2]
    plan = fetch_ahead_plan(wanted, listing, budget=35)
    # itself first, then the names after it (the next frames), then those before, until the budget
    assert plan == [("c" * 64, 10), ("d" * 64, 10), ("a" * 64, 10)]
    assert fetch_ahead_plan(wanted, listing, budget=10) == [("c" * 64, 10)]
    # never a large one, an empty one, a directory, or the wanted content twice
    assert [sha[0] for sha, _ in fetch_ahead_plan(wanted, listing, budget=1 << 30)] == ["c", "d", "a", "b"]


@pytest.mark.parametrize("corrupt", [False, True])
def test_a_large_payload_is_hashed_and_written_beside_its_download(tmp_path, corrupt: bool) -> None:
    data = os.urandom(9 << 20) + b"tail"  # over the size hashed and written in threads of their own
    sha = hashlib.sha256(data).hexdigest()

    async def download(wanted: str, sink) -> int:  # noqa: ANN001
        sent = data if not corrupt else data[:-1] + b"X"
        for i in range(0, len(sent), 65536):  # the pieces a connection hands over
            sink.write(sent[i:i + 65536])
            await trio.sleep(0)
        return len(sent)

    cache = BlobCache(tmp_path / "cache", download)

    async def main() -> None:
        if corrupt:
            with pytest.raises(CorruptBlob):
                await cache.ensure(sha, len(data))
            assert not list((tmp_path / "cache" / "tmp").iterdir())  # nothing left behind
            return
        path = await cache.ensure(sha, len(data))
        assert path.read_bytes() == data and cache.stats.blobs_fetched == 1

    trio.run(main)
