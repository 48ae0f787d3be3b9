"""Packs: many blobs in one HTTP body, so that small payloads do not cost a request each.

A pack is a sequence of frames and nothing else::

    <sha256, 64 lowercase hex> SP <size, decimal> LF
    <exactly size bytes of the blob>
    ...

The same format goes both ways: ``POST /blobs/batch/get`` answers with one
(a JSON list of hashes in, the blobs in the order asked), and
``POST /blobs/batch/put`` takes one. There is no trailer: a downloaded pack
has a Content-Length, and the reader knows which frames it asked for. The
hash in a header is a claim, never trusted: every reader hashes what it got.

`PackParser` is push-style and does no I/O, so that the service (writing
temporary files) and the client (delivering to a cache or a tree) share it.
"""

from __future__ import annotations

import hashlib
import re
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["MEDIA_TYPE", "PackError", "SourceChanged", "PackParser", "Frame", "frame_header", "plan_packs",
           "frame_groups", "read_frames", "PACK_BLOB_LIMIT", "PACK_MAX_BYTES", "PACK_MAX_BLOBS"]

MEDIA_TYPE = "application/x-pvc-pack"
# Blobs up to this size travel in packs; larger ones have a request of their
# own, which resumes with a Range where it broke instead of starting over.
PACK_BLOB_LIMIT = 4 << 20
# One pack's worth: a broken pack is asked for again from the first blob it
# had not finished, so this bounds what a failure costs, and what a reader
# holds in memory is one frame.
PACK_MAX_BYTES = 32 << 20
PACK_MAX_BLOBS = 4096

_HEADER = re.compile(rb"([0-9a-f]{64}) (0|[1-9][0-9]{0,15})\n")
_MAX_HEADER = 64 + 1 + 16 + 1


class PackError(ValueError):
    """A body that is not a well-formed pack (or ends in the middle of a frame)."""


class SourceChanged(PackError):
    """A blob's file no longer has the size it was to be sent with."""


# (sha256, the bytes or the file holding them, size)
Source = tuple[str, bytes | os.PathLike[str] | str, int]
T = TypeVar("T")


def frame_header(sha: str, size: int) -> bytes:
    return f"{sha} {size}\n".encode("ascii")


@dataclass(slots=True)
class Frame:
    """One complete blob of a pack; ``ok`` says whether it hashes to its name."""

    sha256: str
    data: bytes

    @property
    def ok(self) -> bool:
        return hashlib.sha256(self.data).hexdigest() == self.sha256


class PackParser:
    """Feed a pack's bytes in any pieces; get back each frame as soon as it is complete.

    ``max_blob`` bounds a frame's declared size (a hostile header must not
    make the reader allocate without limit); ``expect``, when given, is the
    set of hashes the reader asked for, and any other is refused.
    """

    def __init__(self, *, max_blob: int, expect: Iterable[str] | None = None) -> None:
        self._max_blob = max_blob
        self._expect = set(expect) if expect is not None else None
        self._buf = bytearray()
        self._sha: str | None = None
        self._size = 0
        self.frames = 0
        self.bytes = 0  # blob bytes completed

    @property
    def in_frame(self) -> bool:
        return self._sha is not None or bool(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        buf = self._buf
        buf += data
        pos = 0  # consumed; cut from the buffer once, at the end (not a copy of the rest per frame)
        out: list[Frame] = []
        try:
            while True:
                if self._sha is None:
                    end = buf.find(b"\n", pos, pos + _MAX_HEADER)
                    if end < 0:
                        if len(buf) - pos >= _MAX_HEADER:
                            raise PackError(f"bad frame header {bytes(buf[pos:pos + _MAX_HEADER])!r}")
                        return out
                    m = _HEADER.fullmatch(buf, pos, end + 1)
                    if m is None:
                        raise PackError(f"bad frame header {bytes(buf[pos:end + 1])!r}")
                    sha, size = m.group(1).decode("ascii"), int(m.group(2))
                    if size > self._max_blob:
                        raise PackError(f"blob {sha[:12]}... of {size} bytes: a pack carries at most {self._max_blob}")
                    if self._expect is not None and sha not in self._expect:
                        raise PackError(f"blob {sha[:12]}... was not asked for")
                    pos = end + 1
                    self._sha, self._size = sha, size
                if len(buf) - pos < self._size:
                    return out
                out.append(Frame(self._sha, bytes(buf[pos:pos + self._size])))
                pos += self._size
                if self._expect is not None:
                    self._expect.discard(self._sha)
                self.frames += 1
                self.bytes += self._size
                self._sha = None
        finally:
            del buf[:pos]

    def finish(self) -> None:
        """The body ended: refuse one that stopped inside a frame."""
        if self.in_frame:
            raise PackError(f"the pack ended inside a frame ({self._sha or 'header'})")


def plan_packs(items: Sequence[tuple[str, int]], *, max_bytes: int = PACK_MAX_BYTES,
               max_blobs: int = PACK_MAX_BLOBS) -> Iterator[list[tuple[str, int]]]:
    """Split ``(sha, size)`` items into packs of at most ``max_bytes`` and ``max_blobs``, in order."""
    pack: list[tuple[str, int]] = []
    total = 0
    for sha, size in items:
        if pack and (total + size > max_bytes or len(pack) >= max_blobs):
            yield pack
            pack, total = [], 0
        pack.append((sha, size))
        total += size
    if pack:
        yield pack


def _third(item: Source) -> int:
    return item[2]


def frame_groups(items: Sequence[T], limit: int, *, size: Callable[[T], int] = _third) -> Iterator[Sequence[T]]:
    """Consecutive runs of ``items`` of at most ``limit`` bytes in all (a larger blob alone).

    ``size`` gives an item's size: by default the third field of a `Source`.
    """
    i = 0
    while i < len(items):
        j, total = i, 0
        while j < len(items) and (j == i or total + size(items[j]) <= limit):
            total += size(items[j])
            j += 1
        yield items[i:j]
        i = j


def read_frames(items: Iterable[Source]) -> bytes:
    """The frames of ``items``, reading the files among them (blocking: call it from a worker thread)."""
    parts: list[bytes] = []
    for sha, source, size in items:
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
        else:
            with open(source, "rb") as f:
                data = f.read(size + 1)
        if len(data) != size:
            raise SourceChanged(f"{sha if isinstance(source, bytes | bytearray | memoryview) else source}: "
                                f"changed since it was scanned ({len(data)} bytes, not {size})")
        parts += (frame_header(sha, size), data)
    return b"".join(parts)
