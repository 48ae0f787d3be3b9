"""Errors the service answers, and their one JSON shape.

Every error body is ``{"error": {"code": CODE, "message": TEXT}}`` (docs/api.md).
Domain code raises `ServiceError` (or lets a ``pvc_client`` validation error
through: those carry the same codes); the handlers in ``app.py`` and the
middleware turn them into responses.
"""

from __future__ import annotations

import re

from pvc_client import PVCError
from starlette.responses import Response

from ._json import json_response

__all__ = ["ServiceError", "NotFound", "Conflict", "Invalid", "must_match", "error_response",
           "from_client_error", "STATUS_BY_CODE"]

STATUS_BY_CODE: dict[str, int] = {
    "invalid": 400,
    "invalid_pri": 400,
    "invalid_time": 400,
    "invalid_manifest": 400,
    "hash_mismatch": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "range_not_satisfiable": 416,
    "internal": 500,
    "unavailable": 503,
}


class ServiceError(Exception):
    def __init__(self, code: str, message: str, *, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE[code]
        self.headers = headers or {}

    def prefixed(self, prefix: str) -> ServiceError:
        """The same error, its message saying where in a request it was found."""
        return ServiceError(self.code, prefix + self.message, status=self.status, headers=self.headers)


def NotFound(message: str) -> ServiceError:  # noqa: N802 - reads like a class at raise sites
    return ServiceError("not_found", message)


def Conflict(message: str) -> ServiceError:  # noqa: N802
    return ServiceError("conflict", message)


def Invalid(message: str, code: str = "invalid") -> ServiceError:  # noqa: N802
    return ServiceError(code, message)


def must_match(pattern: re.Pattern[str], text: str, rule: str) -> str:
    """``text``, if ``pattern`` matches all of it; else 400 ``invalid``: the text, then the rule it breaks."""
    if pattern.fullmatch(text) is None:
        # the text comes from a request (a path segment, a body) and may be any length
        raise Invalid(f"{text[:80]!r}: {rule}")
    return text


def from_client_error(error: PVCError) -> ServiceError:
    """A validation error raised by the shared grammar (PRI, time, manifest)."""
    code = error.code if error.code in STATUS_BY_CODE else "invalid"
    return ServiceError(code, error.message)


def error_response(code: str, message: str, status: int | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}},
                         status=status or STATUS_BY_CODE.get(code, 500), headers=headers)
