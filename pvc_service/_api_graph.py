"""Routes: the whole-store graph (``/index``) and a dependency closure (``/closure``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pvc_client import PVCError, parse_pri, parse_ref
from starlette.responses import Response

from ._auth import Principal, require
from ._errors import Invalid
from ._graph import closure_graph, index_graph
from ._json import json_response
from ._models import PAGE_LIMIT, ClosureBody
from ._names import now_us, parse_as_of
from ._state import run_read
from .config import API_PREFIX

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["graph"])


@router.get("/index")
async def index(request: Request, as_of: str | None = None, prefix: str = Query("", max_length=255),
                after: str | None = Query(None, max_length=255, description="page on from this PRI (a page's next)"),
                limit: int | None = Query(None, ge=1, le=PAGE_LIMIT, description="products per page; absent: all"),
                _: Principal = Depends(require("read"))) -> Response:
    when = parse_as_of(as_of, now_us())
    # a canonical name or nothing: any other text is a caller's mistake, not a bound
    try:
        start = parse_pri(after).text if after else None
    except PVCError as error:
        raise Invalid(f"after: {error}", "invalid_pri") from None
    return json_response(await run_read(request, index_graph, when, prefix, start, limit))


@router.post("/closure")
async def closure(request: Request, body: ClosureBody, as_of: str | None = None,
                  _: Principal = Depends(require("read"))) -> Response:
    when = parse_as_of(body.as_of if body.as_of is not None else as_of, now_us())
    roots = [(text, parse_ref(text)) for text in body.roots]
    return json_response(await run_read(request, closure_graph, when, roots, body.depth, body.missing == "omit",
                                        body.after, body.limit))
