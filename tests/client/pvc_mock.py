"""A scripted stand-in for the service, for client unit tests over `httpx.MockTransport`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import trio
import trio.testing

from pvc_client import PVCClient

Reply = httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response]


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run under trio with a virtual clock: backoff sleeps cost no real time."""
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def error(status: int, code: str, message: str = "scripted") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class Script:
    """Answers requests from a list of replies (the last one repeats) and records them."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies) or [httpx.Response(200, json={})]
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(await request.aread())
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def client(self, **kwargs: Any) -> PVCClient:
        kwargs.setdefault("retries", 3)
        return PVCClient("http://pvc.test:8750", transport=httpx.MockTransport(self), **kwargs)

    def json_body(self, i: int = -1) -> Any:
        return json.loads(self.bodies[i])


class BrokenStream(httpx.AsyncByteStream):
    """A body that delivers ``data[:cut]`` and then loses the connection."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data = data
        self.cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset by peer")


def range_server(data: bytes, *, honour_range: bool = True, break_first_at: int | None = None
                 ) -> Callable[[httpx.Request], httpx.Response]:
    """Serve one blob, honouring ``Range: bytes=a-b``; optionally break the first answer."""
    state = {"broken": break_first_at is None}

    def reply(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("range")
        start, end, status = 0, len(data) - 1, 200
        if header and honour_range:
            a, _, b = header.removeprefix("bytes=").partition("-")
            start, end, status = int(a), int(b) if b else len(data) - 1, 206
        body = data[start:end + 1]
        if not state["broken"]:
            state["broken"] = True
            assert break_first_at is not None
            return httpx.Response(status, stream=BrokenStream(body, break_first_at))
        return httpx.Response(status, content=body)

    return reply
