"""Routes: products, versions, labels, publish and rename."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pvc_client import PVCError, parse_label, parse_pri, parse_ref, parse_time, to_micros, validate_manifest
from starlette.responses import Response

from . import _catalog, _publish
from ._auth import Principal, require
from ._errors import Invalid, ServiceError, from_client_error
from ._json import json_response
from ._models import PAGE_LIMIT, LabelBody, PublishBody, PublishManyBody, RenameBody, VersionsBody
from ._names import lookup_product, now_us, parse_as_of, product_by_id
from ._state import run_db, run_read, state
from ._workspaces import check_name
from .config import API_PREFIX

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["products"])

AsOf = Query(None, description="answer as the store was at this time (any accepted time form)")


async def _read_product(request: Request, pri: str, as_of: str | None, fn: Callable[..., Any]) -> Any:
    """``fn(conn, product, when)`` for the product named ``pri``, as the store was at ``as_of``."""
    name = parse_pri(pri).text
    when = parse_as_of(as_of, now_us())

    def work(conn: Any) -> Any:
        return fn(conn, lookup_product(conn, name, when), when)

    return await run_read(request, work)


@router.get("/products")
async def list_products(request: Request, prefix: str = "", as_of: str | None = AsOf,
                        limit: int = Query(1000, ge=1, le=PAGE_LIMIT), after: str | None = None,
                        _: Principal = Depends(require("read"))) -> Response:
    now = now_us()
    when = parse_as_of(as_of, now)
    found, following = await run_read(request, _catalog.list_products, when, prefix, after, limit)
    return json_response({"products": found, "next": following})


@router.get("/products/{pri}")
async def get_product(request: Request, pri: str, as_of: str | None = AsOf,
                      _: Principal = Depends(require("read"))) -> Response:
    return json_response(await _read_product(request, pri, as_of, _catalog.product_summary))


@router.post("/products/{pri}/rename")
async def rename_product(request: Request, pri: str, body: RenameBody,
                         _: Principal = Depends(require("admin"))) -> Response:
    name = parse_pri(pri).text
    new_name = parse_pri(body.new_pri).text
    st = state(request)
    product, began = await run_db(_publish.rename, st.db, name, new_name)
    st.notifier.notify()
    return json_response(await run_read(request, _catalog.product_summary, product, began))


@router.get("/products/{pri}/versions")
async def list_versions(request: Request, pri: str, as_of: str | None = AsOf,
                        _: Principal = Depends(require("read"))) -> Response:
    return json_response({"versions": await _read_product(request, pri, as_of, _catalog.list_versions)})


@router.get("/products/{pri}/versions/{sel}")
async def get_version(request: Request, pri: str, sel: str, as_of: str | None = AsOf,
                      _: Principal = Depends(require("read"))) -> Response:
    def version(conn: Any, product: Any, when: int) -> dict[str, Any]:
        return _catalog.get_version(conn, product, _catalog.find_version(conn, product, sel, when), when)

    return json_response(await _read_product(request, pri, as_of, version))


@router.post("/versions/batch")
async def get_versions(request: Request, body: VersionsBody, as_of: str | None = AsOf,
                       _: Principal = Depends(require("read"))) -> Response:
    when = parse_as_of(body.as_of if body.as_of is not None else as_of, now_us())
    refs = [_exact(i, text) for i, text in enumerate(body.versions)]
    found = await run_read(request, _catalog.get_versions, refs, when, body.missing == "omit")
    return json_response({"versions": found})


def _exact(index: int, text: str) -> tuple[str, int]:
    """(name, number) of the exact ref ``versions[index]``; else 400 saying which and why."""
    try:
        ref = parse_ref(text)
    except PVCError as error:
        raise Invalid(f"versions[{index}]: {error}", "invalid_pri") from None
    if ref.number is None:
        raise Invalid(f"versions[{index}]: {text[:80]!r} is not an exact version (PRI@N)", "invalid_pri")
    return ref.pri.text, ref.number


@router.post("/products/{pri}/versions", status_code=201)
async def publish(request: Request, pri: str, body: PublishBody,
                  who: Principal = Depends(require("publish"))) -> Response:
    req = _publish_input(pri, body, who)
    st = state(request)
    done = await run_db(_publish.publish, st.db, req)
    st.notifier.notify()
    st.metrics.add("publishes")
    return json_response((await run_read(request, _published_versions, [done]))[0], status=201)


@router.post("/versions/publish", status_code=201)
async def publish_many(request: Request, body: PublishManyBody,
                       who: Principal = Depends(require("publish"))) -> Response:
    """Many versions in one transaction: all of them or none (docs/api.md)."""
    reqs = []
    for i, item in enumerate(body.publications):
        try:
            reqs.append(_publish_input(item.pri, item, who))
        except PVCError as error:
            raise from_client_error(error).prefixed(f"publications[{i}]: ") from None
        except ServiceError as error:
            raise error.prefixed(f"publications[{i}]: ") from None
    st = state(request)
    done = await run_db(_publish.publish_many, st.db, reqs)
    st.notifier.notify()
    st.metrics.add("publishes", len(done))
    return json_response({"versions": await run_read(request, _published_versions, done)}, status=201)


def _publish_input(pri: str, body: PublishBody, who: Principal) -> _publish.PublishInput:
    return _publish.PublishInput(
        name=parse_pri(pri).text,
        entries=validate_manifest(body.manifest),
        dependencies=[parse_ref(d) for d in body.dependencies],
        labels=list(dict.fromkeys(_publish.settable_label(label) for label in body.labels)),
        message=body.message or "",
        author=who.author(body.author),
        at_us=None if body.at is None else to_micros(parse_time(body.at)),
        workspace=None if body.workspace is None else (check_name(body.workspace.name), body.workspace.revision),
    )


def _published_versions(conn: Any, done: list[_publish.Published]) -> list[dict[str, Any]]:
    """The Versions just published, as of the time that shows them."""
    return [_catalog.get_version(conn, product_by_id(conn, d.product_id, d.view_us), d.number, d.view_us)
            for d in done]


@router.get("/products/{pri}/labels")
async def get_labels(request: Request, pri: str, as_of: str | None = AsOf,
                     _: Principal = Depends(require("read"))) -> Response:
    return json_response({"labels": await _read_product(request, pri, as_of, _catalog.product_labels)})


@router.put("/products/{pri}/labels/{label}")
async def set_label(request: Request, pri: str, label: str, body: LabelBody,
                    who: Principal = Depends(require("publish"))) -> Response:
    name = parse_pri(pri).text
    label = _publish.settable_label(label)
    st = state(request)
    moved = await run_db(_publish.set_label, st.db, name, label, body.version, who.author(body.author))
    st.notifier.notify()
    return json_response(moved)


@router.delete("/products/{pri}/labels/{label}", status_code=204)
async def delete_label(request: Request, pri: str, label: str,
                       who: Principal = Depends(require("publish"))) -> Response:
    name = parse_pri(pri).text
    label = _publish.settable_label(label)
    st = state(request)
    await run_db(_publish.delete_label, st.db, name, label, who.author(None))
    st.notifier.notify()
    return Response(status_code=204)


@router.get("/products/{pri}/labels/{label}/history")
async def label_history(request: Request, pri: str, label: str, as_of: str | None = AsOf,
                        _: Principal = Depends(require("read"))) -> Response:
    label = parse_label(label)

    def history(conn: Any, product: Any, when: int) -> list[dict[str, Any]]:
        return _catalog.label_history(conn, product, label, when)

    return json_response({"history": await _read_product(request, pri, as_of, history)})
