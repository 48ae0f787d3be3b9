"""A loopback TCP proxy that injects network faults between a client and a service.

Put it between the daemon (or any client) and the PVC service, then change
what it does while the client is busy::

    with FaultProxy(service.port) as proxy:
        mount --pvc proxy.url ...
        proxy.slow(2.0)      # every answer chunk waits 2 s: a service that crawls
        proxy.blackhole()    # connections accepted, requests swallowed, nothing answered
        proxy.refuse()       # connections reset at once: a service that is down
        proxy.passthrough()  # back to normal

Changing to ``blackhole`` or ``refuse`` (and leaving ``blackhole``) resets every
connection in flight, the way a service restart or a network cut would.
The proxy runs trio in its own thread, so synchronous test code can drive it.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

import trio

__all__ = ["FaultProxy", "MODES"]

MODES = ("pass", "slow", "blackhole", "refuse")
_CHUNK = 1 << 16


def _reset(stream: trio.SocketStream) -> None:
    # SO_LINGER 0 turns close() into an RST: the peer sees "connection reset"
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = "pass"
        self.delay = 0.0
        self.connections = 0  # accepted so far
        self._token: trio.lowlevel.TrioToken | None = None
        self._scopes: set[trio.CancelScope] = set()
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- life --------------------------------------------------------------
    def start(self) -> FaultProxy:
        started = threading.Event()

        def run() -> None:
            try:
                trio.run(self._main, started)
            except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
                self._error = exc
                started.set()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        if self._error is not None or not self.port:
            raise RuntimeError(f"the fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._token is not None and self._thread is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)  # type: ignore[union-attr]
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------
    def passthrough(self) -> None:
        self._set("pass")

    def slow(self, seconds: float) -> None:
        """Hold every chunk of every answer for ``seconds`` before passing it on."""
        self._set("slow", seconds)

    def blackhole(self) -> None:
        """Accept connections and swallow requests; never answer."""
        self._set("blackhole")

    def refuse(self) -> None:
        """Reset every connection as soon as it is made."""
        self._set("refuse")

    def _set(self, mode: str, delay: float = 0.0) -> None:
        assert mode in MODES and self._token is not None
        trio.from_thread.run_sync(self._apply, mode, delay, trio_token=self._token)

    def _apply(self, mode: str, delay: float) -> None:
        before = self.mode
        self.mode, self.delay = mode, delay
        if mode in ("blackhole", "refuse") or before == "blackhole":
            for scope in list(self._scopes):
                scope.cancel()

    # -- the trio side -------------------------------------------------------
    async def _main(self, started: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            started.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        if self.mode == "refuse":
            _reset(client)
            await client.aclose()
            return
        reset = False
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                if self.mode == "blackhole":
                    while await client.receive_some(_CHUNK):
                        pass
                    return
                upstream = await trio.open_tcp_stream(*self.upstream)
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, False, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, client, True, nursery.cancel_scope)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                reset = True
            finally:
                self._scopes.discard(scope)
        if scope.cancelled_caught or reset:
            _reset(client)
        with trio.CancelScope(shield=True):
            await client.aclose()

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, answer: bool,
                    both: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(_CHUNK):
                if answer and self.mode == "slow":
                    await trio.sleep(self.delay)
                if self.mode == "blackhole":
                    continue
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # either peer went away: the connection is over
        finally:
            both.cancel()  # one side closed: the connection is over
