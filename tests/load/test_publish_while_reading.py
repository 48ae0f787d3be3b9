"""Publishing while 16 readers read: no reader ever sees a torn or mixed version.

Every file of version N says N all through. A reader opens the versionless
directory once and reads every file relative to that handle: all of them,
and the directory's xattr, must name one version, and each file must be
that version's bytes from end to end. Meanwhile new versions keep coming.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import Publisher, file_tree, mounted, need_fuse
from tests.load.report import record

pytestmark = pytest.mark.fuse

PRI = "spies:100:10-lgt:walter"
READERS = 16
NAMES = ("a.usda", "plate.exr", "sub/cache.bin")


def content(name: str, number: int) -> bytes:
    unit = f"<{name} v{number}>".encode()
    return unit * ((300_000 if name == "plate.exr" else 3_000) // len(unit))


def _reader(mnt: str, stop: Any, queue: Any) -> None:
    seen: set[int] = set()
    problems: list[str] = []
    reads = 0
    while not stop.is_set():
        try:
            dfd = os.open(os.path.join(mnt, PRI), os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            problems.append(f"open dir: {exc}")
            continue
        try:
            number = int(os.getxattr(dfd, "user.prodfs.version"))
            for name in NAMES:
                fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
                try:
                    chunks = []
                    while chunk := os.read(fd, 65536):
                        chunks.append(chunk)
                finally:
                    os.close(fd)
                if b"".join(chunks) != content(name, number):
                    problems.append(f"{name}: not version {number}'s bytes (torn or mixed)")
                reads += 1
            seen.add(number)
        except OSError as exc:
            problems.append(f"read: {exc}")
        finally:
            os.close(dfd)
    queue.put((sorted(seen), reads, problems))


@pytest.mark.parametrize(("versions", "seconds"), [(4, 4), pytest.param(40, 60, marks=pytest.mark.slow)])
def test_publish_while_reading(tmp_path: Path, pvc_url: str, versions: int, seconds: int) -> None:
    need_fuse()
    pvc = Publisher(pvc_url)

    def publish(n: int) -> None:
        pvc.publish(PRI, file_tree(tmp_path / f"v{n}", {name: content(name, n) for name in NAMES}))

    publish(1)
    ctx = multiprocessing.get_context("fork")
    with mounted(tmp_path, pvc_url, "--live-timeout", "0.1", "--feed-poll", "5") as m:
        queue, stop = ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_reader, args=(str(m.path), stop, queue)) for _ in range(READERS)]
        for p in procs:
            p.start()
        interval = seconds / versions
        for n in range(2, versions + 1):
            time.sleep(interval * 0.8)
            publish(n)
        # Readers served from the kernel can keep both cores busy and slow the
        # publishing down: they stop once the last version had time to show,
        # not at a fixed time.
        time.sleep(1.0)
        stop.set()
        results = [queue.get(timeout=seconds + 120) for _ in procs]
        for p in procs:
            p.join(30)
        stats = m.control("stats.json")
    problems = [x for _, _, probs in results for x in probs]
    assert not problems, problems[:10]
    seen = set().union(*(set(s) for s, _, _ in results))
    assert len(seen) >= 3, seen  # the readers did see the name move, several times
    record(f"publish_while_reading[{versions} versions]", {
        "readers": READERS, "versions_published": versions, "versions_seen": len(seen),
        "file_reads": sum(r for _, r, _ in results), "torn_or_mixed": 0, "daemon_errors": stats["errors"]})
