"""systemd's notify protocol (READY=1, STOPPING=1, STATUS=...), standard library only."""

from __future__ import annotations

import os
import socket

__all__ = ["notify"]


def notify(message: str) -> bool:
    """Send a notification when run under systemd with Type=notify; else do nothing."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError:
        return False
