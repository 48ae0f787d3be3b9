"""The application factory: ``create_app(config) -> FastAPI``.

The database and blob store are opened (and the schema created) by the factory
itself, not at lifespan start-up, so the app also works in-process under
``httpx.ASGITransport`` (which runs no lifespan).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pvc_client import PVCError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from . import __version__, _api_blobs, _api_graph, _api_products, _api_system, _api_workspaces
from ._blobs import BlobStore
from ._db import Database, normalize_db_url
from ._errors import ServiceError, error_response, from_client_error
from ._events import Notifier
from ._metrics import Metrics
from ._middleware import RequestMiddleware
from ._state import ServiceState
from .config import API_PREFIX, ServiceConfig

__all__ = ["create_app"]
log = logging.getLogger("pvc_service")


def create_app(config: ServiceConfig) -> FastAPI:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(normalize_db_url(config.db_url, config.data_dir))
    db.create_schema()
    pvc = ServiceState(config=config, db=db, blobs=BlobStore(config.blob_dir, db),
                       metrics=Metrics(), notifier=Notifier())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        db.dispose()

    app = FastAPI(
        title="PVC",
        version=__version__,
        description="Product Version Control: the product version store ProdFS reads (docs/api.md).",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.pvc = pvc
    for module in (_api_system, _api_products, _api_blobs, _api_graph, _api_workspaces):
        app.include_router(module.router)
    _install_error_handlers(app)
    app.add_middleware(RequestMiddleware, metrics=pvc.metrics, max_body_bytes=config.max_body_bytes)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ServiceError)
        return error_response(error.code, error.message, error.status, error.headers)

    async def client_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, PVCError)
        e = from_client_error(error)
        return error_response(e.code, e.message, e.status)

    async def validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return error_response("invalid", _describe(error), 422)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return error_response("not_found", f"no such endpoint: {request.method} {request.url.path}", 404)
        if error.status_code == 405:
            return error_response("invalid", f"{request.method} is not allowed on {request.url.path}", 405,
                                  dict(error.headers or {}))
        if error.status_code == 413:
            return error_response("payload_too_large", str(error.detail), 413)
        code = "internal" if error.status_code >= 500 else "invalid"
        return error_response(code, str(error.detail), error.status_code, dict(error.headers or {}))

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(PVCError, client_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


def _describe(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    more = len(error.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
