"""PostgreSQL restarted under a running service: clean 503s during the outage, success after.

The test runs its own throw-away PostgreSQL server (it must stop and start
it), the same way scripts/pg-test-server.sh does.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.helpers import file_tree
from tests.support.service import running_service

pytestmark = pytest.mark.postgres

PRI = "spies:100:10-lgt:walter"


class PgServer:
    def __init__(self, root: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL is not installed: CI must have it")
            pytest.skip("PostgreSQL is not installed")
        self.bin = Path(bins[-1])
        self.dir = root / "pg"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        res = subprocess.run(prefix + list(cmd), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr + res.stdout

    def init(self) -> None:
        self.dir.mkdir()
        if os.getuid() == 0:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.dir, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-w", "-l", str(self.dir / "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop")


@pytest.fixture
def pg() -> Iterator[PgServer]:
    # not under pytest's temporary tree: that is private to root, and the server runs as postgres
    root = Path(tempfile.mkdtemp(prefix="prodfs-pg-"))
    server = PgServer(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(server.bin / "pg_ctl"), "-D", str(server.dir),
                        "-m", "immediate", "stop"] if os.getuid() == 0 else
                       [str(server.bin / "pg_ctl"), "-D", str(server.dir), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_restart_under_a_running_service(tmp_path: Path, pg: PgServer) -> None:
    from tests.support.helpers import Publisher

    with running_service(tmp_path / "data", db_url=pg.url) as svc:
        pvc = Publisher(svc.url)
        pvc.publish(PRI, file_tree(tmp_path / "v1", {"a.txt": b"one\n"}))
        api = httpx.Client(base_url=svc.api, timeout=30)
        assert api.get(f"/products/{PRI}").json()["latest"] == 1
        pg.stop()
        for _ in range(3):  # every kind of request fails cleanly, and quickly
            started = time.monotonic()
            for r in (api.get(f"/products/{PRI}"), api.get("/index"),
                      api.post(f"/products/{PRI}/versions", json={"manifest": []}), api.get("/health")):
                assert r.status_code == 503, (r.request.url, r.status_code, r.text)
                assert r.json()["error"]["code"] == "unavailable"
            assert time.monotonic() - started < 30
        pg.start()
        deadline = time.monotonic() + 30
        while api.get("/health").status_code != 200:  # the pool reconnects by itself
            assert time.monotonic() < deadline, "the service did not recover after PostgreSQL came back"
            time.sleep(0.2)
        assert api.get(f"/products/{PRI}").json()["latest"] == 1
        pvc.publish(PRI, file_tree(tmp_path / "v2", {"a.txt": b"two\n"}))
        assert api.get(f"/products/{PRI}").json()["latest"] == 2
        assert "Traceback" not in svc.log()
