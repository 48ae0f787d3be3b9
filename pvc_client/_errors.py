"""The one exception tree of the PVC client.

::

    PVCError
    ├── InvalidInput        (400/422: the request or its data is malformed)
    │   ├── InvalidPRI      (raised locally by the grammar, before any request)
    │   └── InvalidTime     (raised locally by the time parser)
    ├── NotFound            (404)
    ├── Conflict            (409: e.g. a publish racing another, --at too early)
    ├── Unauthorized        (401/403: no token, or a token without the role)
    └── Unavailable         (5xx, timeouts, connection refused: worth retrying later)

HTTP errors and httpx exceptions are translated into this tree in exactly one
place, ``_client._translate``. The service uses the same ``code`` strings in
its JSON error bodies (``{"error": {"code": ..., "message": ...}}``).
"""

from __future__ import annotations

__all__ = [
    "PVCError",
    "InvalidInput",
    "InvalidPRI",
    "InvalidTime",
    "NotFound",
    "Conflict",
    "Unauthorized",
    "Unavailable",
    "ERROR_CODES",
]


class PVCError(Exception):
    """Base of every error the client raises."""

    code = "error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class InvalidInput(PVCError):
    code = "invalid"


class InvalidPRI(InvalidInput):
    code = "invalid_pri"


class InvalidTime(InvalidInput):
    code = "invalid_time"


class NotFound(PVCError):
    code = "not_found"


class Conflict(PVCError):
    code = "conflict"


class Unauthorized(PVCError):
    code = "unauthorized"


class Unavailable(PVCError):
    code = "unavailable"


# error code (as sent by the service) -> exception class
ERROR_CODES: dict[str, type[PVCError]] = {
    cls.code: cls
    for cls in (InvalidInput, InvalidPRI, InvalidTime, NotFound, Conflict, Unauthorized, Unavailable)
}
ERROR_CODES["forbidden"] = Unauthorized
ERROR_CODES["hash_mismatch"] = InvalidInput
ERROR_CODES["invalid_manifest"] = InvalidInput
