"""The service command line: ``python -m pvc_service --data DIR`` (and ``pvc serve``).

With only ``--data`` the service keeps its metadata in SQLite at
``DIR/pvc.sqlite3`` and blobs under ``DIR/blobs``. Once it listens it prints
``pvc: serving on http://HOST:PORT`` to stderr and, with ``--ready-file``,
writes that URL to the file: ``--port 0`` picks a free port that callers learn
this way.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn
from sqlalchemy import exc as sa_exc

from . import __version__
from ._auth import TokensFileError, load_tokens
from ._db import SchemaError, normalize_db_url
from ._workers import serve_workers
from .app import create_app
from .config import ServiceConfig

__all__ = ["main", "build_parser"]

log = logging.getLogger("pvc_service")

# a waiting long-poll is woken at shutdown; this bounds the rest
_GRACEFUL_SECONDS = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pvc serve", description="Run the PVC service (HTTP API v1).")
    p.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="data directory: blobs, and the SQLite database unless --db is given")
    p.add_argument("--db", metavar="URL",
                   help="database URL, e.g. postgresql://user@host/db (default: SQLite in DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8750, help="port (default 8750; 0 picks a free one)")
    p.add_argument("--tokens", type=Path, metavar="FILE", help="tokens file: lines 'ROLE NAME TOKEN'")
    p.add_argument("--insecure-bind", action="store_true",
                   help="allow a non-loopback address without a tokens file (anyone may publish)")
    p.add_argument("--ready-file", type=Path, metavar="FILE",
                   help="write the service URL to FILE once it listens")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="service processes sharing the socket (default 1; one per core uses them all)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    # a worker of --workers: the socket its parent bound (see _workers)
    p.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"pvc service {__version__}")
    return p


def main(args: list[str] | None = None) -> int:
    try:
        ns = build_parser().parse_args(args)
    except SystemExit as stop:  # --help, --version and usage errors
        return stop.code if isinstance(stop.code, int) else 2
    logging.basicConfig(level=ns.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 <= ns.port <= 65535:
        return _fail(f"--port {ns.port}: not a port number", 2)
    if not 1 <= ns.workers <= 256:
        return _fail(f"--workers {ns.workers}: give 1 to 256 processes", 2)

    tokens = None
    if ns.tokens is not None:
        try:
            tokens = load_tokens(ns.tokens)
        except TokensFileError as error:
            return _fail(str(error), 2)
    if tokens is None and not ns.insecure_bind and not _is_loopback(ns.host):
        return _fail(f"refusing to listen on {ns.host} without --tokens (anyone could publish); "
                     "give a tokens file, or --insecure-bind to accept that", 2)

    config = ServiceConfig(data_dir=ns.data, db_url=ns.db, tokens=tokens)
    try:
        normalize_db_url(ns.db, ns.data)
        app = create_app(config)
    except (ValueError, sa_exc.ArgumentError) as error:
        return _fail(f"--db: {error}", 2)
    except SchemaError as error:
        return _fail(str(error), 1)
    except sa_exc.SQLAlchemyError as error:
        return _fail(f"cannot open the database: {_first_line(error)}", 1)
    except OSError as error:
        return _fail(f"cannot use the data directory {ns.data}: {error}", 1)

    try:
        sock = socket.socket(fileno=ns.listen_fd) if ns.listen_fd is not None else _listen(ns.host, ns.port)
    except OSError as error:
        return _fail(f"cannot listen on {ns.host}:{ns.port}: {error.strerror or error}", 1)
    host, port = sock.getsockname()[:2]
    url = f"http://{_url_host(host)}:{port}"
    if ns.workers > 1 and ns.listen_fd is None:
        app.state.pvc.db.dispose()  # it was opened to check the database: the workers open their own
        try:
            return serve_workers(ns, sock, url, _GRACEFUL_SECONDS)
        finally:
            sock.close()

    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                   timeout_graceful_shutdown=_GRACEFUL_SECONDS),
                     url=url, ready_file=ns.ready_file, announce=ns.listen_fd is None)
    try:
        # after a graceful stop uvicorn re-raises the signal that asked for it,
        # so SIGTERM still ends the process as SIGTERM would; Ctrl-C lands here
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        return 130
    finally:
        sock.close()
    return 0 if server.announced else 1


class _Server(uvicorn.Server):
    """uvicorn, plus the announcement once listening and a prompt wake-up of long-polls at shutdown."""

    def __init__(self, config: uvicorn.Config, *, url: str, ready_file: Path | None, announce: bool = True) -> None:
        super().__init__(config)
        self.url = url
        self.ready_file = ready_file
        self.announce = announce  # a worker leaves it to its parent, once for all of them
        self.announced = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        if self.announce:
            print(f"pvc: serving on {self.url}", file=sys.stderr, flush=True)
        if self.ready_file is not None:
            tmp = self.ready_file.with_name(self.ready_file.name + ".tmp")
            tmp.write_text(self.url + "\n")
            os.replace(tmp, self.ready_file)  # readers never see half a URL
        self.announced = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.config.app, "state", None)
        pvc = getattr(state, "pvc", None)
        if pvc is not None:
            pvc.stopping = True
            pvc.notifier.notify()
        await super().shutdown(sockets)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol must be named: asyncio sets TCP_NODELAY on an accepted
    # connection only when its socket says IPPROTO_TCP, and an accepted socket
    # copies the listener's. Without it every response after the first on a
    # kept-alive connection waits out the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _fail(message: str, status: int) -> int:
    print(f"pvc: {message}", file=sys.stderr, flush=True)
    return status
