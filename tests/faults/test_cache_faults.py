"""The local cache under attack: a corrupt blob on disk, a wrong blob from the service, a full disk.

Never serve bytes that do not hash to the manifest's sha256; refetch or
answer EIO, say so in the log; a full cache disk fails the read that needed
the space (ENOSPC or EIO) and nothing else; nothing corrupt stays behind.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.helpers import Publisher, blob_problems, file_tree, mounted, sha256, timed_errno
from tests.support.faultproxy import FaultProxy
from tests.support.service import Service, StoredBlob

pytestmark = pytest.mark.fuse

PRI = "spies:100:10-lgt:walter"
FAST = ("--pvc-timeout", "1", "--feed-poll", "2")
CORRUPT_LOG = re.compile(r"corrupt|hashes to|changed on disk")


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def _cached(cache: Path, data: bytes) -> Path:
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    return cache / "blobs" / sha[:2] / sha


def test_corrupt_cached_blob_is_never_served(tmp_path: Path, pvc: Publisher, proxy: FaultProxy) -> None:
    data = os.urandom(300_000)
    pvc.publish(PRI, file_tree(tmp_path / "src", {"plate.exr": data}))
    cache = tmp_path / "cache"
    with mounted(tmp_path, proxy.url, *FAST, cache=cache) as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        blob = _cached(cache, data)
        _corrupt(blob)
        # another path to the same content: a new inode, so the kernel's page
        # cache cannot answer for the daemon
        assert (m / f"{PRI}@1" / "plate.exr").read_bytes() == data
        assert sha256(blob) == blob.name  # refetched in place
        assert "changed on disk" in m.log_text()
        # corrupt again, and no service to refetch from: EIO, not bad bytes
        _corrupt(blob)
        proxy.refuse()
        code, _ = timed_errno(lambda: (m / f"{PRI}@latest" / "plate.exr").read_bytes())
        assert code == errno.EIO
        proxy.passthrough()
        assert (m / f"{PRI}@latest" / "plate.exr").read_bytes() == data
    # a corrupt blob found by a new daemon (its file changed, so the ledger no longer vouches for it) is replaced too
    _corrupt(blob)
    with mounted(tmp_path, proxy.url, *FAST, cache=cache, name="again") as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        assert "corrupt on disk" in m.log_text()
    assert blob_problems(cache) == []


def test_verified_blobs_are_trusted_across_daemons_and_fsck_finds_rot(
    tmp_path: Path, pvc: Publisher, pvc_url: str
) -> None:
    from mount_tools.cli import main as prodfs_main
    from prodfs.storage.ledger import Ledger, signature_of

    data = os.urandom(400_000)
    pvc.publish(PRI, file_tree(tmp_path / "src", {"plate.exr": data}))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_url, cache=cache) as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        assert m.control("stats.json")["blobs_fetched"] == 1
    # a new daemon (the next render job) trusts what the first one hashed ...
    with mounted(tmp_path, pvc_url, cache=cache, name="trusting") as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        stats = m.control("stats.json")
        assert (stats["blobs_hashed"], stats["blobs_fetched"]) == (0, 0)
    # ... unless told to hash each payload at its first use
    with mounted(tmp_path, pvc_url, "--cache-verify", "per-mount", cache=cache, name="paranoid") as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
        assert m.control("stats.json")["blobs_hashed"] == 1
    # bytes rotting under an unchanged signature: only `prodfs fsck` sees it, and removes the blob
    blob = _cached(cache, data)
    assert prodfs_main(["fsck", "--cache-dir", str(cache)]) == 0
    _corrupt(blob)
    ledger = Ledger(cache / "verified.sqlite")
    ledger.put(blob.name, signature_of(blob))
    ledger.close()
    assert prodfs_main(["fsck", "--cache-dir", str(cache)]) == 6
    assert not blob.exists()
    with mounted(tmp_path, pvc_url, cache=cache, name="after") as m:
        assert (m / PRI / "plate.exr").read_bytes() == data
    assert blob_problems(cache) == []
    assert prodfs_main(["fsck", "--cache-dir", str(tmp_path / "nowhere")]) == 5


def test_cached_blob_removed_behind_the_daemon(tmp_path: Path, pvc: Publisher, pvc_url: str) -> None:
    data = os.urandom(10_000)
    pvc.publish(PRI, file_tree(tmp_path / "src", {"a.bin": data}))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_url, cache=cache) as m:
        assert (m / PRI / "a.bin").read_bytes() == data
        _cached(cache, data).unlink()  # an operator cleaning the cache by hand
        assert (m / f"{PRI}@1" / "a.bin").read_bytes() == data
    assert _cached(cache, data).exists()


def test_wrong_blob_from_the_service(tmp_path: Path, pvc: Publisher, pvc_service: Service) -> None:
    data = os.urandom(200_000)
    pvc.publish(PRI, file_tree(tmp_path / "src", {"bad.bin": data, "good.txt": b"fine\n"}))
    stored = StoredBlob(pvc_service.data_dir, data)
    original = stored.read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write(bytes(damaged))
    cache = tmp_path / "cache"
    with mounted(tmp_path, pvc_service.url, cache=cache, allow_log=CORRUPT_LOG) as m:
        code, _ = timed_errno(lambda: (m / PRI / "bad.bin").read_bytes())
        assert code == errno.EIO
        assert (m / PRI / "good.txt").read_bytes() == b"fine\n"
        assert re.search(r"from the service hashes to", m.log_text())
        assert not _cached(cache, data).exists() and not list((cache / "tmp").iterdir())
        # the service is repaired: the next open fetches again (no failure remembered)
        stored.write(original)
        assert (m / PRI / "bad.bin").read_bytes() == data
        assert m.control("stats.json")["errors"] >= 1
    assert blob_problems(cache) == []


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201 - yields the mounted directory
    """A 2 MiB tmpfs for the cache: a disk that fills up."""
    path = tmp_path / "small"
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {res.stderr}")
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_cache_disk_full(tmp_path: Path, pvc: Publisher, pvc_url: str, small_disk: Path) -> None:
    big = os.urandom(3 << 20)
    small = b"small enough\n"
    pvc.publish(PRI, file_tree(tmp_path / "src", {"big.bin": big, "small.txt": small}))
    cache = small_disk / "cache"
    with mounted(tmp_path, pvc_url, cache=cache) as m:
        code, _ = timed_errno(lambda: (m / PRI / "big.bin").read_bytes())
        assert code in (errno.ENOSPC, errno.EIO), code
        # the daemon is up, other reads are served, the failure is not remembered
        assert m.control("stats.json")["errors"] >= 1
        assert (m / PRI / "small.txt").read_bytes() == small
        code, _ = timed_errno(lambda: (m / PRI / "big.bin").read_bytes())
        assert code in (errno.ENOSPC, errno.EIO), code
        assert not list((cache / "tmp").iterdir()), "a partial download was left behind"
        assert blob_problems(cache) == []
        assert not _cached(cache, big).exists()
