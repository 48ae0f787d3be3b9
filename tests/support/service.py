"""Run the PVC service as a real subprocess for tests (over loopback).

Usage::

    from tests.support.service import running_service

    with running_service(tmp_path / "data") as svc:
        svc.url        # "http://127.0.0.1:PORT"  (the API is under svc.api = svc.url + "/api/v1")
        svc.proc       # the subprocess.Popen
        svc.stop()     # SIGTERM, wait; the data directory is kept
        svc.start()    # start again on the same port (clients keep their URL)

``db_url`` selects PostgreSQL (default: SQLite in the data directory);
``tokens`` maps a token to ``(role, name)`` and turns authentication on.
The context manager stops the service on exit. If the service dies while
starting, `ServiceFailed` carries its stderr.

``pg_database(base_url)`` creates a throw-away PostgreSQL database (and drops
it afterwards) on the server ``base_url`` points at.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = ["Service", "ServiceFailed", "running_service", "pg_database", "StoredBlob"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ServiceFailed(RuntimeError):
    pass


class Service:
    """One service process over a data directory; restartable on the same port."""

    def __init__(self, data_dir: Path, *, db_url: str | None = None,
                 tokens: Mapping[str, tuple[str, str]] | None = None, host: str = "127.0.0.1",
                 extra_args: Sequence[str] = (), work_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.db_url = db_url
        self.host = host
        self.extra_args = list(extra_args)
        self.work_dir = work_dir
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.tokens_file: Path | None = None
        if tokens is not None:
            self.tokens_file = work_dir / "tokens"
            lines = [f"{role} {name} {token}" for token, (role, name) in tokens.items()]
            self.tokens_file.write_text("\n".join(lines) + "\n")
        self.log_path = work_dir / "service.log"

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "pvc_service", "--data", str(self.data_dir), "--host", self.host,
               "--port", str(self.port), "--ready-file", str(self.work_dir / "ready"),
               "--log-level", "info"]
        if self.db_url:
            cmd += ["--db", self.db_url]
        if self.tokens_file is not None:
            cmd += ["--tokens", str(self.tokens_file)]
        return cmd + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the service is already running")
        ready = self.work_dir / "ready"
        ready.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise ServiceFailed(f"the service exited with {self.proc.returncode} while starting:\n"
                                    + self.log())
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceFailed(f"the service did not start within {timeout}s:\n" + self.log())
            time.sleep(0.02)
        self.url = ready.read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop gracefully (SIGTERM), killing after ``timeout``. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        """Everything the service wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def running_service(data_dir: str | os.PathLike[str], *, db_url: str | None = None,
                    tokens: Mapping[str, tuple[str, str]] | None = None, host: str = "127.0.0.1",
                    extra_args: Sequence[str] = ()) -> Iterator[Service]:
    """Start ``python -m pvc_service`` on a free port; yield it; stop it on exit."""
    with tempfile.TemporaryDirectory(prefix="pvc-svc-") as work:
        service = Service(Path(data_dir), db_url=db_url, tokens=tokens, host=host,
                          extra_args=extra_args, work_dir=Path(work))
        service.start()
        try:
            yield service
        finally:
            service.stop()


@contextlib.contextmanager
def pg_database(base_url: str) -> Iterator[str]:
    """Create a fresh database on the server of ``base_url``; yield its URL; drop it."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    admin_url = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"pvc_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class StoredBlob:
    """A blob as the service stores it, found by content: a file of its own or a stretch of a pack file.

    For tests that damage the store behind the service's back (and repair it).
    """

    def __init__(self, data_dir: Path, data: bytes) -> None:
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        self.size = len(data)
        loose = list(Path(data_dir).rglob(sha))
        if loose:
            self.path, self.offset = loose[0], 0
            return
        header = f"{sha} {len(data)}\n".encode()
        for pack in Path(data_dir).rglob("*.pack"):
            at = pack.read_bytes().find(header + data)
            if at >= 0:
                self.path, self.offset = pack, at + len(header)
                return
        raise FileNotFoundError(f"blob {sha} is not in the store under {data_dir}")

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), self.size, self.offset)

    def write(self, data: bytes) -> None:
        """Overwrite the blob's bytes in place (same length)."""
        assert len(data) == self.size
        os.chmod(self.path, 0o644)
        with open(self.path, "r+b") as f:
            os.pwrite(f.fileno(), data, self.offset)
