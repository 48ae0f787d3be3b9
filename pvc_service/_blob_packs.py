"""Small blobs kept together: one pack file per batch upload.

A batch upload's small blobs (`PACKED_MAX` bytes or less) are written, in
the order they came, into one file ``DIR/packs/ab/<name>.pack`` in the pack
format itself (`pvc_client._pack`: a header line, then the bytes), and where
each one's bytes start is kept in the ``blob_places`` table. Why: a loose
file per 4 KiB payload costs an inode, a directory entry and a seek each,
and a version's small files were read back as that many scattered files
(measured on the benchmark's tree: a cold batch download of a version's 100
small files took 20 ms, the service reading one file each). In a pack file
they lie one after the other, in the order the publisher sent them (its
tree's order), which is the order a directory is read in.

A batch download of blobs that follow each other in one pack file is one
read, and the bytes read are the answer's frames as they are: each stored
header is compared with the one expected, so a damaged or misplaced file
cuts the answer short (`SourceChanged`) rather than sending other bytes.
Pack files are written once and never changed; a blob stored twice (two
uploads racing) keeps the place recorded first, the other copy is dead bytes.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pvc_client import SourceChanged, frame_header, read_frames

__all__ = ["PACKED_MAX", "Stored", "PackFileWriter", "open_stored", "read_stored", "spans"]

# Blobs up to this size go into pack files; larger ones get a file of their
# own (they are read on their own, streamed and resumed by Range).
PACKED_MAX = 1 << 20
_PACKS = "packs"


@dataclass(frozen=True, slots=True)
class Stored:
    """Where a stored blob's bytes are: ``size`` bytes of ``path`` from ``offset``."""

    sha256: str
    path: Path
    offset: int  # 0 for a blob in a file of its own
    size: int
    packed: bool = False

    @property
    def frame_start(self) -> int:
        """Where the blob's frame (header, then bytes) starts in its pack file."""
        return self.offset - len(frame_header(self.sha256, self.size))


def pack_path(root: Path, name: str) -> Path:
    return root / _PACKS / name[:2] / f"{name}.pack"


class PackFileWriter:
    """A pack file being written in the upload directory; `install` moves it into place."""

    def __init__(self, tmp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="packfile-")
        self.tmp = Path(name)
        self._f = os.fdopen(fd, "wb")
        self._pos = 0
        self.places: dict[str, tuple[int, int]] = {}  # sha -> (offset of its bytes, size)

    def add(self, sha: str, data: bytes) -> None:
        if sha in self.places:  # the same payload twice in one upload: stored once
            return
        header = frame_header(sha, len(data))
        self._f.write(header)
        self._f.write(data)
        self.places[sha] = (self._pos + len(header), len(data))
        self._pos += len(header) + len(data)

    def close(self) -> None:
        self._f.close()

    def install(self, root: Path) -> str | None:
        """Rename the (synced) file into place; its name, or None if it holds nothing."""
        self.close()
        if not self.places:
            self.tmp.unlink(missing_ok=True)
            return None
        name = uuid.uuid4().hex
        final = pack_path(root, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, final)
        return name

    def discard(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)


def open_stored(item: Stored) -> BinaryIO:
    """The file holding ``item``, checked first when it is a pack file's: the header stored
    before its bytes must be the one expected (else `SourceChanged`, and nothing is sent)."""
    f = open(item.path, "rb")  # noqa: SIM115 - the caller's to close
    if item.packed:
        header = frame_header(item.sha256, item.size)
        if os.pread(f.fileno(), len(header), item.frame_start) != header:
            f.close()
            raise SourceChanged(f"{item.path}: blob {item.sha256} is not where it was recorded")
    return f


def spans(items: Sequence[Stored]) -> Iterator[Sequence[Stored]]:
    """Consecutive runs of ``items`` read with one read each: packed frames one after the other in one file.

    A blob in a file of its own is a run by itself.
    """
    i = 0
    while i < len(items):
        j = i + 1
        if items[i].packed:
            while (j < len(items) and items[j].packed and items[j].path == items[j - 1].path
                   and items[j].frame_start == items[j - 1].offset + items[j - 1].size):
                j += 1
        yield items[i:j]
        i = j


def read_stored(items: Sequence[Stored]) -> bytes:
    """The frames of ``items`` in order (blocking: call it from a worker thread)."""
    parts: list[bytes] = []
    for run in spans(items):
        first, last = run[0], run[-1]
        if not first.packed:
            parts.append(read_frames([(first.sha256, first.path, first.size)]))
            continue
        start, end = first.frame_start, last.offset + last.size
        with open(first.path, "rb") as f:
            data = os.pread(f.fileno(), end - start, start)
        if len(data) != end - start:
            raise SourceChanged(f"{first.path}: shorter than its recorded blobs")
        for item in run:
            header = frame_header(item.sha256, item.size)
            at = item.frame_start - start
            if data[at:at + len(header)] != header:
                raise SourceChanged(f"{first.path}: blob {item.sha256} is not where it was recorded")
        parts.append(data)
    return b"".join(parts)
