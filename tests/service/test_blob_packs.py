"""Small blobs of a batch upload kept in one pack file, served from it exactly (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc_client import PACK_MEDIA_TYPE, PackParser, SourceChanged, frame_header
from pvc_service._blob_packs import PACKED_MAX, Stored, open_stored, read_stored, spans

from .helpers import error_code



def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_of(blobs: list[bytes]) -> bytes:
    return b"".join(frame_header(sha(b), len(b)) + b for b in blobs)


async def put_pack(api: httpx.AsyncClient, blobs: list[bytes]) -> dict:
    r = await api.post("/blobs/batch/put", content=pack_of(blobs), headers={"Content-Type": PACK_MEDIA_TYPE})
    assert r.status_code == 200, r.text
    return r.json()


async def get_pack(api: httpx.AsyncClient, shas: list[str]) -> list[tuple[str, bytes]]:
    r = await api.post("/blobs/batch/get", json={"sha256": shas})
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    parser = PackParser(max_blob=64 << 20)
    frames = parser.feed(r.content)
    parser.finish()
    return [(f.sha256, f.data) for f in frames]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.anyio
async def test_small_blobs_of_a_batch_share_one_file(api: httpx.AsyncClient, tmp_path: Path) -> None:
    small = [os.urandom(n) for n in (1, 100, 4096, 4096, 70_000, PACKED_MAX)]
    large = os.urandom(PACKED_MAX + 1)
    blobs = small + [large, small[2]]  # a repeated payload is stored once
    answer = await put_pack(api, blobs)
    assert answer == {"blobs": len(blobs), "bytes": sum(map(len, blobs)), "created": len(small) + 1}
    store = tmp_path / "data" / "blobs"
    packs = list(store.glob("packs/*/*.pack"))
    assert len(packs) == 1
    # the pack file is in the pack format itself: each stored once, in the order sent
    assert packs[0].read_bytes() == pack_of(small)
    loose = [p for p in files_under(store) if p.suffix != ".pack" and "tmp" not in p.relative_to(store).parts]
    assert [p.name for p in loose] == [sha(large)]

    # every order, repeats, packed and loose mixed: the bytes asked for, hash-checked
    for order in (blobs, list(reversed(blobs)), [small[3], large, small[0], small[3]]):
        got = await get_pack(api, [sha(b) for b in order])
        assert got == [(sha(b), b) for b in order]

    # one by one, with HEAD, ranges and conditional requests
    for b in (small[4], large, small[0]):
        r = await api.get(f"/blobs/{sha(b)}")
        assert r.status_code == 200 and r.content == b
        assert (await api.head(f"/blobs/{sha(b)}")).headers["content-length"] == str(len(b))
        r = await api.get(f"/blobs/{sha(b)}", headers={"Range": "bytes=0-0"})
        assert r.status_code == 206 and r.content == b[:1]
        r = await api.get(f"/blobs/{sha(b)}", headers={"Range": f"bytes=-{min(3, len(b))}"})
        assert r.content == b[-3:]
        assert (await api.get(f"/blobs/{sha(b)}", headers={"If-None-Match": f'"{sha(b)}"'})).status_code == 304
    assert (await api.post("/blobs/missing", json={"sha256": [sha(b) for b in blobs]})).json() == {"missing": []}

    # uploading them again (a publish racing another) adds nothing new, and keeps serving the first copies
    again = await put_pack(api, small[:3])
    assert again["created"] == 0
    assert await get_pack(api, [sha(b) for b in small[:3]]) == [(sha(b), b) for b in small[:3]]


@pytest.mark.anyio
async def test_a_bad_batch_stores_nothing(api: httpx.AsyncClient, tmp_path: Path) -> None:
    good = [os.urandom(100) for _ in range(5)]
    body = pack_of(good)
    bad = bytearray(body)
    bad[-1] ^= 0xFF  # the last blob no longer hashes to its name
    r = await api.post("/blobs/batch/put", content=bytes(bad), headers={"Content-Type": PACK_MEDIA_TYPE})
    assert r.status_code == 400 and error_code(r) == "hash_mismatch"
    r = await api.post("/blobs/batch/put", content=body[:-10], headers={"Content-Type": PACK_MEDIA_TYPE})
    assert r.status_code == 400
    assert files_under(tmp_path / "data" / "blobs") == []
    missing = (await api.post("/blobs/missing", json={"sha256": [sha(b) for b in good]})).json()["missing"]
    assert sorted(missing) == sorted(sha(b) for b in good)


@pytest.mark.anyio
async def test_a_damaged_pack_file_is_never_served_as_another_blob(app: FastAPI, api: httpx.AsyncClient,
                                                                   tmp_path: Path) -> None:
    blobs = [os.urandom(50) for _ in range(3)]
    await put_pack(api, blobs)
    (pack,) = (tmp_path / "data" / "blobs").glob("packs/*/*.pack")
    data = pack.read_bytes()
    cut = len(frame_header(sha(blobs[0]), 50)) + 50
    pack.write_bytes(data[cut:] + data[:cut])  # frames moved: every recorded place is wrong
    # what a download streams (a server cuts the answer short there)
    with pytest.raises(SourceChanged, match="not where it was recorded"):
        read_stored(app.state.pvc.blobs.locate([sha(b) for b in blobs[1:]]))
    with pytest.raises(SourceChanged, match="not where it was recorded"):  # what a large one streams from
        open_stored(app.state.pvc.blobs.locate([sha(blobs[2])])[0])
    r = await api.get(f"/blobs/{sha(blobs[1])}")  # read whole: refused before a byte is sent
    assert r.status_code == 500


def _stored(path: str, offset: int, size: int, name: str) -> Stored:
    return Stored(sha(name.encode()), Path(path), offset, size, packed=True)


def test_frames_next_to_each_other_are_one_read() -> None:
    a = _stored("p1", 0, 10, "a")
    b = Stored(sha(b"b"), Path("p1"), a.offset + a.size + len(frame_header(sha(b"b"), 7)), 7, packed=True)
    elsewhere = Stored(sha(b"c"), Path("p2"), 70, 7, packed=True)
    loose = Stored(sha(b"d"), Path("d"), 0, 7)
    assert [len(run) for run in spans([a, b])] == [2]
    assert [len(run) for run in spans([b, a])] == [1, 1]  # out of order: two reads
    assert [len(run) for run in spans([a, b, elsewhere, loose, loose])] == [2, 1, 1, 1]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20), st.data())
def test_read_stored_gives_the_frames_asked_for(tmp_path_factory: pytest.TempPathFactory, blobs: list[bytes],
                                                 data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("packs") / "one.pack"
    stored: list[Stored] = []
    body = b""
    for b in blobs:
        header = frame_header(sha(b), len(b))
        stored.append(Stored(sha(b), path, len(body) + len(header), len(b), packed=True))
        body += header + b
    path.write_bytes(body)
    order = data.draw(st.lists(st.sampled_from(range(len(blobs))), max_size=30))
    assert read_stored([stored[i] for i in order]) == b"".join(
        frame_header(sha(blobs[i]), len(blobs[i])) + blobs[i] for i in order)
    path.write_bytes(b"x" + body[1:])  # a damaged header is noticed, never sent
    with pytest.raises(SourceChanged):
        read_stored(stored)
