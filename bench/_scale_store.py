"""The store of a scale run: built once from a generated history, reused while its arguments match.

A store lives in ``STORE_DIR/<key>/``, the key naming the database and every
argument of the generator (``sqlite-100000p-3v-2f-seed0``)::

    store.json   what was built, how long it took, and what later runs added
    data/        the service's --data directory (blobs; the SQLite file on SQLite)
    pg/          PostgreSQL's data directory (on PostgreSQL)

``store.json`` is written last, so a directory without it (a build that was
interrupted) is removed and built again. Stores are big (a million products
take gigabytes) and are never kept inside the repository.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ._system import BenchError

__all__ = ["GeneratorArgs", "Store", "ensure_store", "postgres", "database_version", "DEFAULT_STORE_DIR"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE_DIR = Path("/work/scale-stores")
FORMAT = 1  # of store.json; a store of another format is built again
PG_SCRIPT = ROOT / "scripts" / "pg-test-server.sh"

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class GeneratorArgs:
    """The arguments of ``bench.gen_history``: the same ones always give the same history."""

    products: int
    versions_per_product: int
    files: int = 2
    seed: int = 0

    def key(self, db: str) -> str:
        return f"{db}-{self.products}p-{self.versions_per_product}v-{self.files}f-seed{self.seed}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.gen_history", "--products", str(self.products),
                "--versions-per-product", str(self.versions_per_product), "--files", str(self.files),
                "--seed", str(self.seed)]


@dataclass(slots=True)
class Store:
    path: Path
    db: str
    args: GeneratorArgs
    record: dict
    reused: bool

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def pg_dir(self) -> Path:
        return self.path / "pg"

    def add_run(self, entry: dict) -> None:
        """Note in store.json what a run changed (published versions, workspaces): a reused store is not pristine."""
        self.record.setdefault("runs", []).append(entry)
        _write_record(self.path, self.record)


def generator_sha256() -> str:
    return hashlib.sha256((ROOT / "bench" / "gen_history.py").read_bytes()).hexdigest()


def _write_record(path: Path, record: dict) -> None:
    tmp = path / "store.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path / "store.json")  # a reader sees the old record or the new one, never half


def check_outside_repository(store_dir: Path) -> Path:
    store_dir = store_dir.resolve()
    if store_dir == ROOT or ROOT in store_dir.parents:
        raise BenchError(f"--store-dir {store_dir} is inside the repository: stores are gigabytes, keep them outside")
    return store_dir


def ensure_store(store_dir: Path, db: str, args: GeneratorArgs, log: Log, *, build_timeout: float) -> Store:
    """The store for ``db`` and ``args`` under ``store_dir``: the one already there, or a new one."""
    path = check_outside_repository(store_dir) / args.key(db)
    record = _read_record(path)
    if record is not None and record.get("format") == FORMAT and record.get("generator") == asdict(args) \
            and record.get("db") == db:
        log(f"reusing the store {path} (built {record.get('built')} in {record.get('build_seconds', 0):.0f} s)")
        return Store(path, db, args, record, reused=True)
    if path.exists():
        log(f"{path} holds no complete store of these arguments: building it again")
        _remove_store(path)
    path.mkdir(parents=True)
    # PostgreSQL runs as its own user when started as root: it must reach its data directory
    path.chmod(0o755)
    log(f"building the store {path}: gen_history {' '.join(args.command()[3:])} | pvc import")
    record = {"format": FORMAT, "db": db, "generator": asdict(args), "generator_sha256": generator_sha256(),
              "runs": []}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        url = None
        if db == "postgresql":
            url = stack.enter_context(postgres(path / "pg", log))
        record.update(_import(path, args, url, build_timeout))
    record["build_seconds"] = round(time.monotonic() - started, 1)
    record["built"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record["bytes"] = _tree_bytes(path)
    _write_record(path, record)
    log(f"store built in {record['build_seconds']:.0f} s: {record['import_summary']}")
    return Store(path, db, args, record, reused=False)


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads((path / "store.json").read_text())
    except (OSError, ValueError):
        return None


def _remove_store(path: Path) -> None:
    pg = path / "pg"
    if (pg / "postmaster.pid").exists():  # a server left running by an interrupted build
        subprocess.run(["bash", str(PG_SCRIPT), "stop", str(pg)], capture_output=True, timeout=120)
    shutil.rmtree(path)


def _import(path: Path, args: GeneratorArgs, db_url: str | None, timeout: float) -> dict:
    """gen_history piped into ``pvc import`` (two processes: the generator runs beside the import)."""
    cmd = [sys.executable, "-m", "pvc_service._import", "-", "--data", str(path / "data"), "--allow-missing-blobs"]
    if db_url:
        cmd += ["--db", db_url]
    err_path = path / "import.log"
    started = time.monotonic()
    with open(err_path, "wb") as err:
        gen = subprocess.Popen(args.command(), stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        imp = subprocess.Popen(cmd, stdin=gen.stdout, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        assert gen.stdout is not None
        gen.stdout.close()  # the import alone holds the pipe: it sees EOF when the generator ends
        try:
            out, _ = imp.communicate(timeout=timeout)
            gen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for p in (gen, imp):
                p.kill()
                p.wait()
            raise BenchError(f"building the store took more than {timeout:.0f} s (see {err_path})") from None
    if gen.returncode != 0 or imp.returncode != 0:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"building the store failed (generator {gen.returncode}, import {imp.returncode}): "
                         + " / ".join(tail))
    return {"import_summary": out.decode(errors="replace").strip(),
            "import_seconds": round(time.monotonic() - started, 1)}


def _tree_bytes(path: Path) -> int:
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, f)).st_size
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres(pg_dir: Path, log: Log) -> Iterator[str]:
    """A throwaway PostgreSQL server on ``pg_dir`` (created on first use), stopped on exit; yields its URL."""
    env = {**os.environ, "PRODFS_TEST_PG_PORT": str(free_port())}
    try:
        res = subprocess.run(["bash", str(PG_SCRIPT), "start", str(pg_dir)], capture_output=True, text=True,
                             env=env, timeout=300)
    except subprocess.TimeoutExpired:
        raise BenchError("PostgreSQL did not start within 300 s") from None
    if res.returncode != 0:
        log_tail = ""
        with contextlib.suppress(OSError):
            log_tail = " / ".join((pg_dir / "log").read_text(errors="replace").strip().splitlines()[-3:])
        raise BenchError(f"cannot start PostgreSQL: {res.stderr.strip()[-300:]} {log_tail}".strip())
    url = res.stdout.strip().splitlines()[-1]
    log(f"PostgreSQL at {url}")
    try:
        yield url
    finally:
        subprocess.run(["bash", str(PG_SCRIPT), "stop", str(pg_dir)], capture_output=True, timeout=300)
        log("PostgreSQL stopped")


def database_version(db: str, url: str | None) -> str | None:
    """The database's own version string (SQLite's library as the service loads it, or the server's)."""
    if db == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=10) as conn:
            row = conn.execute("SELECT version()").fetchone()
        return row[0] if row else None
    except Exception as exc:  # noqa: BLE001 - a version we cannot read is reported, not fatal
        return f"unknown ({exc!r})"[:200]
