"""Routes: blob upload, existence checks and (ranged) download."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from pvc_client import PACK_MEDIA_TYPE as PACK_TYPE
from pvc_client import frame_groups, frame_header

from ._auth import Principal, require
from ._blob_packs import Stored, open_stored, read_stored
from ._blobs import ByteRange, check_sha, parse_range
from ._errors import ServiceError
from ._json import json_response
from ._metrics import Metrics
from ._middleware import HEAD_FLAG
from ._models import BatchGetBody, MissingBody
from ._state import run_db, state
from .config import API_PREFIX

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["blobs"])

_CHUNK = 256 * 1024
_BIG_CHUNK = 1 << 20  # a large blob streams a megabyte per worker-thread hop
_WHOLE = 1 << 20  # blobs up to this size are read whole with their open
_CACHE = "public, max-age=31536000, immutable"


@router.post("/blobs/missing")
async def missing(request: Request, body: MissingBody,
                  _: Principal = Depends(require("publish"))) -> Response:
    found = await run_db(state(request).blobs.missing, body.sha256)
    return json_response({"missing": found})


@router.put("/blobs/{sha256}", status_code=201,
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload(request: Request, sha256: str, _: Principal = Depends(require("publish"))) -> Response:
    check_sha(sha256)
    st = state(request)
    limit = st.config.max_blob_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError("payload_too_large", f"a blob is at most {limit} bytes")
    size, created = await st.blobs.put(sha256, request.stream(), limit)
    st.metrics.add("blob_bytes_in", size)
    return json_response({"sha256": sha256, "size": size}, status=201 if created else 200)


_PACK_BODY = {"requestBody": {"required": True, "content": {
    PACK_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/blobs/batch/put", summary="Upload many blobs in one pack (all or nothing)",
             openapi_extra=_PACK_BODY)
async def batch_put(request: Request, _: Principal = Depends(require("publish"))) -> Response:
    st = state(request)
    count, size, created = await st.blobs.put_pack(request.stream(), st.config.max_blob_bytes)
    st.metrics.add("blob_bytes_in", size)
    return json_response({"blobs": count, "bytes": size, "created": created})


@router.post("/blobs/batch/get", summary="Download many blobs as one pack, in the order asked")
async def batch_get(request: Request, body: BatchGetBody, _: Principal = Depends(require("read"))) -> Response:
    st = state(request)
    # refuses a bad name, or a missing blob, before any byte; reads a small answer whole in the same hop
    found, whole = await run_db(st.blobs.read_batch, body.sha256, _WHOLE)
    if whole is not None:
        st.metrics.add("blob_bytes_out", sum(item.size for item in found))
        return Response(whole, media_type=PACK_TYPE)
    length = sum(len(frame_header(item.sha256, item.size)) + item.size for item in found)
    return StreamingResponse(_stream_pack(found, st.metrics), headers={"Content-Length": str(length)},
                             media_type=PACK_TYPE)


async def _stream_pack(blobs: list[Stored], metrics: Metrics) -> AsyncIterator[bytes]:
    # Small blobs are read a group at a time in one worker thread (a thread
    # hop per 4 KiB file would cost more than the read), those next to each
    # other in a pack file with one read; a large one streams.
    for group in frame_groups(blobs, _CHUNK, size=_size):
        first = group[0]
        if first.size > _CHUNK:
            yield frame_header(first.sha256, first.size)
            f = await anyio.to_thread.run_sync(open_stored, first)
            async for chunk in _stream(f, first.offset, first.offset + first.size, metrics):
                yield chunk
            continue
        data = await anyio.to_thread.run_sync(read_stored, group)  # a blob that changed cuts the answer short
        metrics.add("blob_bytes_out", sum(item.size for item in group))
        yield data


def _size(item: Stored) -> int:
    return item.size


def _headers(sha256: str) -> dict[str, str]:
    return {"ETag": f'"{sha256}"', "Cache-Control": _CACHE, "Accept-Ranges": "bytes"}


@router.get("/blobs/{sha256}", summary="Download a blob (HEAD: its size)")
async def download(request: Request, sha256: str, _: Principal = Depends(require("read"))) -> Response:
    st = state(request)
    etag = f'"{sha256}"'
    headers = _headers(sha256)
    if request.scope.get(HEAD_FLAG):
        # a HEAD (see the middleware): the size, without opening the blob
        size = (await run_db(st.blobs.require, sha256)).size
        return Response(headers={**headers, "Content-Length": str(size)},
                        media_type="application/octet-stream")
    if request.headers.get("if-none-match") in (etag, "*"):
        await run_db(st.blobs.require, sha256)
        return Response(status_code=304, headers=headers)
    # One worker-thread hop opens the blob, and reads it whole if it is small:
    # a request for a small payload waits on no other.
    size, body, base = await run_db(st.blobs.open_for_read, sha256, _WHOLE)
    try:
        wanted = ByteRange(0, size)
        status = 200
        if_range = request.headers.get("if-range")
        if if_range is None or if_range == etag:
            asked = parse_range(request.headers.get("range"), size)
            if asked is not None:
                wanted, status = asked, 206
                headers["Content-Range"] = f"bytes {asked.start}-{asked.end - 1}/{size}"
    except BaseException:
        if not isinstance(body, bytes):
            body.close()
        raise
    headers["Content-Length"] = str(wanted.end - wanted.start)
    if isinstance(body, bytes):
        st.metrics.add("blob_bytes_out", wanted.end - wanted.start)
        return Response(body[wanted.start:wanted.end], status_code=status, headers=headers,
                        media_type="application/octet-stream")
    return StreamingResponse(_stream(body, base + wanted.start, base + wanted.end, st.metrics), status_code=status,
                             headers=headers, media_type="application/octet-stream")


async def _stream(f: BinaryIO, start: int, end: int, metrics: Metrics) -> AsyncIterator[bytes]:
    try:
        left = end - start
        pos = start
        while left > 0:
            chunk = await anyio.to_thread.run_sync(os.pread, f.fileno(), min(_BIG_CHUNK, left), pos)
            if not chunk:  # cannot happen to an immutable blob; never loop forever
                break
            left -= len(chunk)
            pos += len(chunk)
            metrics.add("blob_bytes_out", len(chunk))
            yield chunk
    finally:
        f.close()
