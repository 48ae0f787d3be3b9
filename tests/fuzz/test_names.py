"""The PRI grammar and the mount's path parser under random input.

In-process (hypothesis, many cases) and through a real mount (random bytes
as path components): every answer is a node, ENOENT or EINVAL (the kernel
itself answers ENAMETOOLONG past 255 bytes), and the daemon stays up.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prodfs.resolution.context import Context
from prodfs.mount.fs import Operations
from prodfs.resolution.graph import Dep, Graph, ProductInfo, VersionInfo
from prodfs.mount.namespace import FsError, Namespace
from prodfs.mount.state import MountState
from prodfs.storage.versions import VersionStore
from pvc_client import InvalidPRI, parse_pri, parse_ref
from tests.support.helpers import Publisher, file_tree, mounted, need_fuse

PRI = "spies:100:10-lgt:walter"
T0 = 1_767_225_600_000_000

# text biased towards the grammar's own characters, in odd places
_alphabet = st.sampled_from(list("spies:100-lgt@_walter") + ["@", ":", "-", "0", "1", ".", "/", " ", "é", "\x00", "\udcff"])
_names = st.one_of(
    st.text(_alphabet, max_size=40),
    st.text(max_size=40),
    st.builds(lambda a, b: f"{a}@{b}", st.sampled_from([PRI, "spies-x", ""]), st.text(_alphabet, max_size=12)),
    st.text(_alphabet, min_size=250, max_size=300),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_names)
def test_grammar_accepts_or_says_invalid(text: str) -> None:
    try:
        ref = parse_ref(text)
    except InvalidPRI:
        return
    # what parses is canonical: it prints back as given and parses again the same
    assert str(ref) == text and parse_ref(str(ref)) == ref
    assert len(text.encode("utf-8")) <= 255
    try:
        assert parse_pri(text).text == text and ref.versionless
    except InvalidPRI:
        assert not ref.versionless


def _state() -> MountState:
    g = Graph()
    g.add(ProductInfo(pri=PRI, product_id=1, created_us=T0,
                      versions={1: VersionInfo(1, T0), 2: VersionInfo(2, T0 + 1, (Dep("spies-x", 1),))},
                      labels={"published": 1}, aliases=("spies:old-walter",)))
    g.add(ProductInfo(pri="spies-x", product_id=2, created_us=T0, versions={1: VersionInfo(1, T0)}))
    return MountState(Context(roots=()), g)


async def _no_fetch(pri: str, number: int) -> dict:
    raise AssertionError("a root lookup must never fetch")


NS = Namespace(_state(), VersionStore(_no_fetch, None))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_names | st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_root_lookup_is_a_node_enoent_or_einval(name: str) -> None:
    try:
        node = trio.run(NS.lookup, 1, name)
    except FsError as exc:
        assert exc.errno in (errno.ENOENT, errno.EINVAL), (name, exc.errno)
        return
    assert node.ino >= 2


@given(st.binary(max_size=64))
def test_bytes_that_are_not_utf8_are_enoent(raw: bytes) -> None:
    try:
        Operations._name(raw)
    except FsError as exc:
        assert exc.errno == errno.ENOENT
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")


def _random_names(seed: int, n: int) -> list[bytes]:
    import random

    rnd = random.Random(seed)
    pieces = [b"@", b":", b"-", b"spies", b"100", b"lgt", b"walter", b"@1", b"@01", b"@1.2", b"@latest",
              b"\xff", b"\xc3", b"\xe2\x82", b" ", b"..", b"@@", b"\x01"]
    out = []
    for _ in range(n):
        if rnd.random() < 0.3:
            out.append(bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(1, 300))).replace(b"/", b"_"))
        else:
            out.append(b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(1, 30))))
    return out


@pytest.mark.parametrize("count", [300, pytest.param(5000, marks=pytest.mark.slow)])
def test_random_names_through_a_mount(tmp_path: Path, pvc_url: str, count: int) -> None:
    need_fuse()
    Publisher(pvc_url).publish(PRI, file_tree(tmp_path / "src", {"a.txt": b"a\n", "d/b.txt": b"b\n"}))
    allowed = {errno.ENOENT, errno.EINVAL, errno.ENAMETOOLONG}
    seen: dict[int, int] = {}
    with mounted(tmp_path, pvc_url) as m:
        root = os.fsencode(m.path)
        for i, name in enumerate(_random_names(count, count)):
            name = name.replace(b"\x00", b"_")
            for parent in (root, os.path.join(root, PRI.encode()), os.path.join(root, PRI.encode(), b"d")):
                try:
                    os.lstat(os.path.join(parent, name))
                except OSError as exc:
                    assert exc.errno in allowed, (name, exc)
                    seen[exc.errno] = seen.get(exc.errno, 0) + 1
        assert m.control("stats.json")["pid"]  # still serving
        assert (m / PRI / "a.txt").read_bytes() == b"a\n"
    assert seen.get(errno.ENOENT) and seen.get(errno.EINVAL)
