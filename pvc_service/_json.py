"""JSON responses encoded directly with the standard library.

The routes build plain dicts and lists; FastAPI's generic encoder walks every
value again, which is slow for a 100k-product graph, so responses skip it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

__all__ = ["json_response", "dumps"]


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(value: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=dumps(value), status_code=status, headers=headers,
                    media_type="application/json")
