"""Packs: many blobs in one request, both ways, against the real service.

The format is checked on its own (any split of the bytes parses the same),
then uploads and downloads over loopback: every blob hash-checked, a bad or
cut-short upload stores nothing, and a download broken or corrupted on the
way is asked again for what had not arrived, or refused, and never delivers
a blob twice or a wrong one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc_client import (
    PACK_MEDIA_TYPE,
    Frame,
    InvalidInput,
    NotFound,
    PackError,
    PackParser,
    PVCClient,
    PVCError,
    frame_header,
    plan_packs,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_of(blobs: list[bytes]) -> bytes:
    return b"".join(frame_header(sha(b), len(b)) + b for b in blobs)


def blobs_of(n: int, size: int = 4096) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def arun(url: str, fn: Callable[[PVCClient], Awaitable[Any]], **kwargs: Any) -> Any:
    async def main() -> Any:
        async with PVCClient(url, **kwargs) as client:
            return await fn(client)

    return trio.run(main)


# -- the format --------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(blobs=st.lists(st.binary(max_size=300), max_size=8), cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_any_split_parses_to_the_same_frames(blobs: list[bytes], cuts: list[int]) -> None:
    data = pack_of(blobs)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    parser = PackParser(max_blob=1000)
    frames: list[Frame] = []
    for a, b in zip(points, points[1:]):
        frames += parser.feed(data[a:b])
    parser.finish()
    assert [(f.sha256, f.data) for f in frames] == [(sha(b), b) for b in blobs]
    assert all(f.ok for f in frames)


@pytest.mark.parametrize("bad", [
    b"nothex " + b"0" * 60 + b" 3\nabc",
    b"a" * 64 + b" -3\n",
    b"a" * 64 + b" 03\nabc",
    b"a" * 64 + b"3\nabc",
    b"a" * 200,
])
def test_malformed_headers_are_refused(bad: bytes) -> None:
    with pytest.raises(PackError):
        PackParser(max_blob=1000).feed(bad)


def test_limits_and_unasked_blobs_are_refused() -> None:
    with pytest.raises(PackError, match="at most"):
        PackParser(max_blob=10).feed(frame_header("a" * 64, 11))
    with pytest.raises(PackError, match="not asked for"):
        PackParser(max_blob=10, expect=["b" * 64]).feed(frame_header("a" * 64, 1))
    parser = PackParser(max_blob=10)
    parser.feed(frame_header("a" * 64, 5) + b"abc")
    with pytest.raises(PackError, match="inside a frame"):
        parser.finish()
    wrong = PackParser(max_blob=10).feed(frame_header("a" * 64, 3) + b"abc")
    assert len(wrong) == 1 and not wrong[0].ok  # the header's hash is a claim, checked by the reader


def test_plan_packs_bounds_bytes_and_count() -> None:
    items = [(f"{i:064x}", 10) for i in range(25)]
    packs = list(plan_packs(items, max_bytes=45, max_blobs=3))
    assert [len(p) for p in packs] == [3] * 8 + [1]
    assert [i for p in packs for i in p] == items
    assert [len(p) for p in plan_packs([("a" * 64, 100)], max_bytes=10)] == [1]  # never an empty pack


# -- uploads -----------------------------------------------------------------------------------

def test_upload_pack_stores_every_blob(url: str, tmp_path: Path) -> None:
    blobs = blobs_of(300) + [b"", b"x"]
    files = []
    for i, b in enumerate(blobs[:100]):  # from files, as a publish does, and from bytes
        (tmp_path / f"f{i}").write_bytes(b)
        files.append((sha(b), tmp_path / f"f{i}", len(b)))
    items = files + [(sha(b), b, len(b)) for b in blobs[100:]]

    async def go(client: PVCClient) -> tuple[dict, list[str], dict]:
        answer = await client.upload_pack(items)
        return answer, await client.missing_blobs([sha(b) for b in blobs]), dict(client.stats)

    answer, missing, stats = arun(url, go)
    assert answer["blobs"] == len(blobs) and answer["bytes"] == sum(map(len, blobs))
    assert missing == [] and stats["requests"] == 2
    for b in blobs[::37]:
        assert httpx.get(f"{url}/api/v1/blobs/{sha(b)}").content == b


def test_a_bad_blob_in_an_upload_stores_nothing(url: str) -> None:
    good = blobs_of(20)
    bad = os.urandom(100)
    body = pack_of(good[:10]) + frame_header(sha(b"something else"), len(bad)) + bad + pack_of(good[10:])
    r = httpx.post(f"{url}/api/v1/blobs/batch/put", content=body, headers={"Content-Type": PACK_MEDIA_TYPE})
    assert r.status_code == 400 and r.json()["error"]["code"] == "hash_mismatch"
    cut = pack_of(good)[:-10]
    r = httpx.post(f"{url}/api/v1/blobs/batch/put", content=cut, headers={"Content-Type": PACK_MEDIA_TYPE})
    assert r.status_code == 400 and "inside a frame" in r.json()["error"]["message"]
    garbage = httpx.post(f"{url}/api/v1/blobs/batch/put", content=b"GET / HTTP/1.1\r\n" * 10)
    assert garbage.status_code == 400 and "not a pack" in garbage.json()["error"]["message"]
    missing = arun(url, lambda c: c.missing_blobs([sha(b) for b in good]))
    assert sorted(missing) == sorted(sha(b) for b in good)  # all or nothing


def test_a_file_changed_since_the_scan_is_refused(url: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    item = (sha(b"12345"), path, 5)
    path.write_bytes(b"123456")
    with pytest.raises(InvalidInput, match="changed since it was scanned"):
        arun(url, lambda c: c.upload_pack([item]))


# -- downloads ---------------------------------------------------------------------------------

def _stored(url: str, n: int, size: int = 4096) -> list[bytes]:
    blobs = blobs_of(n, size)
    arun(url, lambda c: c.upload_pack([(sha(b), b, len(b)) for b in blobs]))
    return blobs


def _download(url: str, shas: list[str], **kwargs: Any) -> tuple[list[Frame], dict]:
    got: list[Frame] = []

    async def deliver(frames: list[Frame]) -> None:
        got.extend(frames)

    async def go(client: PVCClient) -> dict:
        await client.download_pack(shas, deliver)
        return dict(client.stats)

    return got, arun(url, go, **kwargs)


def test_download_pack_in_the_order_asked(url: str) -> None:
    blobs = _stored(url, 200)
    shas = [sha(b) for b in reversed(blobs)]
    got, stats = _download(url, shas + shas[:3])  # a repeated name is fetched once
    assert [f.sha256 for f in got] == shas
    assert all(f.ok for f in got) and [f.data for f in got] == list(reversed(blobs))
    assert stats["requests"] == 1
    with pytest.raises(NotFound, match="no blob"):
        _download(url, [shas[0], "f" * 64])


class _Faulty(httpx.AsyncBaseTransport):
    """The real transport, but the first ``times`` pack downloads are cut or corrupted at byte ``at``."""

    def __init__(self, at: int, *, corrupt: bool = False, times: int = 1) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.at, self.corrupt, self.times = at, corrupt, times
        self.pack_requests: list[int] = []  # blobs asked for by each pack request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/blobs/batch/get"):
            return response
        import json

        self.pack_requests.append(len(json.loads(request.content)["sha256"]))
        if self.times <= 0:
            return response
        self.times -= 1
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_Broken(response.stream, self.at, self.corrupt))

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Broken(httpx.AsyncByteStream):
    def __init__(self, inner: Any, at: int, corrupt: bool) -> None:
        self.inner, self.at, self.corrupt = inner, at, corrupt

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            if seen + len(chunk) > self.at:
                cut = self.at - seen
                if not self.corrupt:
                    yield chunk[:cut]
                    raise httpx.ReadError("connection cut by the test")
                chunk = chunk[:cut] + bytes([chunk[cut] ^ 1]) + chunk[cut + 1:]
                self.at = 1 << 62
            seen += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_broken_download_asks_again_for_the_rest(url: str) -> None:
    blobs = _stored(url, 100)
    shas = [sha(b) for b in blobs]
    transport = _Faulty(at=40 * (4096 + 70) + 1000)  # inside the 41st frame
    got, stats = _download(url, shas, transport=transport, retries=3)
    assert [f.sha256 for f in got] == shas  # each exactly once, in order
    assert [f.data for f in got] == blobs
    assert transport.pack_requests == [100, 60] and stats["retries"] == 1


def test_a_corrupted_download_is_refused_before_delivery(url: str) -> None:
    blobs = _stored(url, 10)
    shas = [sha(b) for b in blobs]
    transport = _Faulty(at=3 * (4096 + 70) + 500, corrupt=True)  # a flipped byte in the 4th blob
    with pytest.raises(PVCError, match="arrived corrupted"):
        _download(url, shas, transport=transport)
    got: list[Frame] = []

    async def deliver(frames: list[Frame]) -> None:
        got.extend(frames)

    transport = _Faulty(at=3 * (4096 + 70) + 500, corrupt=True)
    with pytest.raises(PVCError):
        arun(url, lambda c: c.download_pack(shas, deliver), transport=transport)
    assert [f.sha256 for f in got] == shas[:len(got)] and len(got) <= 3 and all(f.ok for f in got)


# -- whole trees -------------------------------------------------------------------------------

def test_publish_and_get_go_by_packs(url: str, pri: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(400):
        (src / f"f{i:03d}.bin").write_bytes(os.urandom(2048 + i))
    (src / "sub" / "big.bin").write_bytes(os.urandom(5 << 20))  # over the pack limit: a request of its own
    (src / "same-a").write_bytes(b"same")
    (src / "same-b").write_bytes(b"same")
    (src / "empty").write_bytes(b"")

    async def go(client: PVCClient) -> tuple[dict, float, float]:
        await client.publish_directory(pri, src)
        published = client.stats["requests"]
        await client.materialize(pri, tmp_path / "dst")
        return dict(client.stats), published, client.stats["requests"] - published

    _, published, fetched = arun(url, go)
    # missing check, one pack, the large blob, the publish; resolve, one pack, the large blob
    assert published <= 5 and fetched <= 4
    for path in src.rglob("*"):
        twin = tmp_path / "dst" / path.relative_to(src)
        assert twin.is_dir() if path.is_dir() else twin.read_bytes() == path.read_bytes()
