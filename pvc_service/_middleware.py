"""The outermost request handling: request ids, access log, metrics, body limit,
and the one place where unexpected exceptions and database outages become
JSON error responses.

A plain ASGI middleware (not BaseHTTPMiddleware) so streaming responses and
long-polls pass through untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._db import is_outage
from ._errors import ServiceError, error_response
from ._metrics import Metrics
from .config import API_PREFIX

__all__ = ["RequestMiddleware", "HEAD_FLAG"]

# set in the ASGI scope of a HEAD request (which the routes see as a GET)
HEAD_FLAG = "pvc.head"

access_log = logging.getLogger("pvc_service.access")
error_log = logging.getLogger("pvc_service.error")

_BLOB_UPLOAD_PREFIX = f"{API_PREFIX}/blobs/"


class _BodyTooLarge(HTTPException):
    # an HTTPException so that FastAPI's body reader lets it through unchanged
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"a request body is at most {limit} bytes")


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0
        method: str = scope["method"]
        path: str = scope["path"]
        head = method == "HEAD"
        if head:
            # HEAD is GET without the body, for every endpoint: routes see a GET
            # (and can tell from HEAD_FLAG that no body will be sent). A copy:
            # the server's own scope must still say HEAD, or it waits for the
            # body that Content-Length announces (uvicorn's httptools protocol
            # reads the method from it) and drops the connection.
            scope = {**scope, "method": "GET", HEAD_FLAG: True}

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # blob uploads are limited (and streamed) by their route; other bodies
        # are parsed in memory, so they are capped here
        limited = not (method == "PUT" and path.startswith(_BLOB_UPLOAD_PREFIX))
        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if limited and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        try:
            if limited and _content_length(scope) > self.max_body_bytes:
                raise _BodyTooLarge(self.max_body_bytes)
            await self.app(scope, receive_wrapper, send_wrapper)
        except ClientDisconnect:
            # the client went away mid-request (an upload cut short): nobody to answer
            access_log.info("%s %s: client disconnected", method, path)
            status = status or 499
        except Exception as error:  # noqa: BLE001 - this is the last resort by design
            response = self._error(error, method, path, request_id)
            if status:
                # the answer has begun: nothing sensible can be sent any more
                error_log.error("%s %s failed after the response started (request %s)", method, path,
                                request_id, exc_info=error)
            else:
                await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(method, route_path, status or 500, elapsed)
            access_log.info("%s %s %d %.1fms", method, path, status or 500, elapsed * 1000)

    def _error(self, error: Exception, method: str, path: str, request_id: str) -> Any:
        if isinstance(error, _BodyTooLarge):
            return error_response("payload_too_large", str(error.detail))
        if isinstance(error, ServiceError):
            # raised while a response streamed or outside routing
            return error_response(error.code, error.message, error.status, error.headers)
        if is_outage(error):
            error_log.warning("%s %s: database unavailable: %s", method, path, _first_line(error))
            return error_response("unavailable", "the database is unavailable; retry later")
        error_log.error("%s %s: internal error (request %s)", method, path, request_id, exc_info=error)
        return error_response("internal", f"internal error; the service log has request id {request_id}")


def _content_length(scope: Scope) -> int:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
