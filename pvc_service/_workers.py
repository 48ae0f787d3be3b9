"""Several service processes on one listening socket: ``pvc serve --workers N``.

One process answers on one core: its Python work (routing, building the
statements' rows into JSON) holds the interpreter lock, and a burst of
first lookups queues behind it. Workers are whole service processes
(``python -m pvc_service --listen-fd FD``) that accept from the socket this
process bound, so the kernel spreads connections over them; this process
only starts them, says it serves once every one does, forwards SIGTERM and
Ctrl-C to them, and stops them all when one dies (a supervisor such as
systemd then restarts the service; restarting a worker here would hide a
crash loop).

What each worker keeps to itself: its metrics (``/metrics`` answers for the
worker that took the request) and its change-feed wake-ups (a long-poll
waiting on one worker learns of another's publish at its next read of the
database, within ``event_poll_seconds``, as with several services on one
PostgreSQL).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

__all__ = ["serve_workers"]

log = logging.getLogger("pvc_service")

_START_SECONDS = 60.0
_POLL_SECONDS = 0.1


def serve_workers(ns: argparse.Namespace, sock: socket.socket, url: str, graceful_seconds: float) -> int:
    """Run ``ns.workers`` workers on ``sock`` until a signal or a worker's end; the exit status."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    with tempfile.TemporaryDirectory(prefix="pvc-workers-") as tmp:
        ready = [Path(tmp) / f"worker{i}.ready" for i in range(ns.workers)]
        workers = [subprocess.Popen(_worker_command(ns, sock.fileno(), path), pass_fds=(sock.fileno(),),
                                    stdin=subprocess.DEVNULL) for path in ready]
        try:
            status = _supervise(workers, ready, url, ns.ready_file, received)
        finally:
            _stop(workers, graceful_seconds)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if status is None and received and received[0] == signal.SIGTERM:
        # end as SIGTERM would, like a single process after its graceful stop
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    if status is None:
        return 130 if received else 0
    return status


def _worker_command(ns: argparse.Namespace, fd: int, ready: Path) -> list[str]:
    command = [sys.executable, "-m", "pvc_service", "--data", str(ns.data), "--host", ns.host,
               "--log-level", ns.log_level, "--listen-fd", str(fd), "--ready-file", str(ready)]
    if ns.db:
        command += ["--db", ns.db]
    if ns.tokens is not None:
        command += ["--tokens", str(ns.tokens)]
    if ns.insecure_bind:
        command.append("--insecure-bind")
    return command


def _supervise(workers: list[subprocess.Popen[bytes]], ready: list[Path], url: str, ready_file: Path | None,
               received: list[int]) -> int | None:
    """Wait for the workers to start, announce, then wait for a signal (None) or a worker's end (1)."""
    deadline = time.monotonic() + _START_SECONDS
    while not all(path.exists() for path in ready):
        if received:
            return None
        if any(w.poll() is not None for w in workers):
            print("pvc: a worker failed to start (its error is above)", file=sys.stderr, flush=True)
            return 1
        if time.monotonic() > deadline:
            print(f"pvc: the workers did not start within {_START_SECONDS:.0f} s", file=sys.stderr, flush=True)
            return 1
        time.sleep(_POLL_SECONDS)
    print(f"pvc: serving on {url} ({len(workers)} workers)", file=sys.stderr, flush=True)
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(url + "\n")
        os.replace(tmp, ready_file)  # readers never see half a URL
    while not received:
        for worker in workers:
            if worker.poll() is not None:
                log.error("worker %d ended with status %s: stopping the others", worker.pid, worker.returncode)
                return 1
        time.sleep(_POLL_SECONDS)
    return None


def _stop(workers: list[subprocess.Popen[bytes]], graceful_seconds: float) -> None:
    """SIGTERM to every worker still running; kill those that outlast their graceful stop."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + graceful_seconds + 5
    for worker in workers:
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
