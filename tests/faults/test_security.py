"""Security: a read-only mount, allow_other only when asked (then the manifest's modes hold),
and the service's roles on every endpoint of its OpenAPI document."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support.helpers import Publisher, mounted, need_fuse
from tests.support.service import running_service

PRI = "spies:100:10-lgt:walter"
NOBODY = 65534
# the other user cannot run this checkout's interpreter: a shell and cat will do
PROBE = 'for p in "$@"; do if cat "$p" >/dev/null 2>/dev/null; then echo ok; else echo denied; fi; done'


def _as_nobody(*paths: Path) -> list[str]:
    """Try to read each path as user nobody: "ok" or "denied" (any error)."""
    res = subprocess.run(["/bin/sh", "-c", PROBE, "probe", *map(str, paths)], user=NOBODY, group=NOBODY,
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def _errno_as_nobody(path: Path) -> str:
    res = subprocess.run(["/bin/sh", "-c", 'cat "$1" 2>&1 >/dev/null', "probe", str(path)], user=NOBODY,
                         group=NOBODY, capture_output=True, text=True, timeout=60, cwd="/")
    return res.stdout.strip()


@pytest.fixture
def modes_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "private").mkdir(parents=True)
    (src / "public.txt").write_text("everyone\n")
    (src / "secret.txt").write_text("owner only\n")
    (src / "secret.txt").chmod(0o600)
    (src / "private" / "inside.txt").write_text("hidden by its directory\n")
    (src / "private").chmod(0o700)
    return src


def _write_attempts(root: Path) -> list[int | None]:
    codes: list[int | None] = []
    for attempt in (lambda: open(root / "public.txt", "w"), lambda: open(root / "new.txt", "x"),
                    lambda: os.mkdir(root / "d"), lambda: os.unlink(root / "public.txt"),
                    lambda: os.chmod(root / "public.txt", 0o777), lambda: os.truncate(root / "public.txt", 0),
                    lambda: os.setxattr(root / "public.txt", "user.x", b"1"),
                    lambda: os.rename(root / "public.txt", root / "moved.txt"),
                    lambda: os.symlink("public.txt", root / "l")):
        try:
            attempt()
            codes.append(None)
        except OSError as exc:
            codes.append(exc.errno)
    return codes


@pytest.mark.fuse
def test_mount_is_read_only_and_private_by_default(tmp_path: Path, pvc_url: str, modes_tree: Path) -> None:
    need_fuse()
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")
    Publisher(pvc_url).publish(PRI, modes_tree)
    with mounted(tmp_path, pvc_url) as m:
        top = m / PRI
        assert set(_write_attempts(top)) <= {errno.EROFS, errno.EPERM, errno.EACCES}
        assert _write_attempts(top).count(errno.EROFS) >= 6
        assert (top / "public.txt").read_text() == "everyone\n"
        # another user does not even see into the mount
        assert _as_nobody(top / "public.txt") == ["denied"]
        assert "Permission denied" in _errno_as_nobody(top / "public.txt")


@pytest.mark.fuse
def test_allow_other_keeps_the_manifest_modes(tmp_path: Path, pvc_url: str, modes_tree: Path) -> None:
    need_fuse()
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")
    Publisher(pvc_url).publish(PRI, modes_tree)
    # pytest's temporary tree is private to root: mount where another user can walk to
    base = Path(tempfile.mkdtemp(prefix="prodfs-allow-other-"))
    base.chmod(0o755)
    try:
        _check_allow_other(base, pvc_url)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_allow_other(base: Path, pvc_url: str) -> None:
    with mounted(base, pvc_url, "--allow-other") as m:
        top = m / PRI
        got = _as_nobody(top / "public.txt", top / "secret.txt", top / "private" / "inside.txt")
        assert got == ["ok", "denied", "denied"]
        assert "Permission denied" in _errno_as_nobody(top / "secret.txt")
        assert (top / "secret.txt").read_text() == "owner only\n"  # the owner still reads it
        assert set(_write_attempts(top)) <= {errno.EROFS, errno.EPERM, errno.EACCES}


TOKENS = {"reader-token-1": ("read", "viewer"), "publisher-token-1": ("publish", "lighter"),
          "admin-token-1": ("admin", "wrangler")}
OPEN = {"/api/v1/health", "/api/v1/metrics"}
NEEDS_ADMIN = {("POST", "/api/v1/products/{pri}/rename")}
READS = {("POST", "/api/v1/closure"), ("POST", "/api/v1/blobs/batch/get"),  # queries with a body (docs/api.md)
         ("POST", "/api/v1/versions/batch")}


def _fill(path: str) -> str:
    values = {"pri": PRI, "sel": "1", "label": "approved", "sha256": "0" * 64, "name": "ws", "id": "0" * 16,
              "snapshot_id": "0" * 16, "sid": "0" * 16}
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    assert "{" not in path, path
    return path


def test_roles_on_every_endpoint(tmp_path: Path) -> None:
    """Read tokens read, publish tokens write, admin renames: for every route the document lists."""
    with running_service(tmp_path / "data", tokens=TOKENS) as svc, httpx.Client(base_url=svc.url, timeout=30) as http:
        doc = http.get("/api/v1/openapi.json").json()
        routes = [(method.upper(), path) for path, ops in doc["paths"].items() for method in ops]
        assert len(routes) >= 20
        checked = 0
        for method, path in routes:
            if path in OPEN:
                continue
            url = _fill(path)
            body = {"json": {}} if method in ("POST", "PUT") else {}
            anonymous = http.request(method, url, **body)
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
            wrong = http.request(method, url, headers={"Authorization": "Bearer not-a-token-at-all"}, **body)
            assert wrong.status_code == 401, (method, path)
            reader = http.request(method, url, headers={"Authorization": "Bearer reader-token-1"}, **body)
            publisher = http.request(method, url, headers={"Authorization": "Bearer publisher-token-1"}, **body)
            if method in ("GET", "HEAD") or (method, path) in READS:
                assert reader.status_code != 403 and reader.status_code != 401, (method, path)
            else:
                assert reader.status_code == 403, (method, path, reader.status_code)
                if (method, path) in NEEDS_ADMIN:
                    assert publisher.status_code == 403, (method, path)
                else:
                    assert publisher.status_code not in (401, 403), (method, path, publisher.text)
            checked += 1
        assert checked >= 18
        assert http.get("/api/v1/health").status_code == 200
