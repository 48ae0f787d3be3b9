"""The async PVC client: httpx under trio, one error tree, retries for what is safe to repeat.

Every call goes through `PVCClient._send`, which owns the retry loop, the
statistics and the translation of failures (`_translate`, the only place
where httpx exceptions and HTTP error answers become `PVCError`\\ s).

Cancellation: the daemon runs this client inside trio nurseries. Requests are
bounded by httpx timeouts only, never by ``trio.move_on_after`` around a
request, because cancelling a request mid-flight can strand a connection-pool
slot; the client itself never cancels a request it started.
"""

from __future__ import annotations

import json as _json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

import httpx
import trio

from ._args import (
    JSON,
    Progress,
    TimeArg,
    any_ref,
    as_time,
    check_label,
    check_sha,
    exact_ref,
    path_segment,
    pri_path,
    version_selector,
    workspace_origin,
    workspace_spec,
)
from ._errors import ERROR_CODES, Conflict, InvalidInput, NotFound, PVCError, Unauthorized, Unavailable
from ._manifest import normalize_manifest
from ._pack import MEDIA_TYPE as PACK_TYPE
from ._pack import (
    PACK_BLOB_LIMIT,
    PACK_MAX_BLOBS,
    Frame,
    PackError,
    PackParser,
    Source,
    SourceChanged,
    frame_groups,
    frame_header,
    read_frames,
)
from ._pri import LATEST, parse_pri, parse_ref
from ._publish import PUBLISH_BATCH_LIMIT, Publication, publish_directories, publish_directory
from ._transfer import materialize

__all__ = ["DEFAULT_URL", "VERSIONS_BATCH_LIMIT", "PUBLISH_BATCH_LIMIT", "PVCClient"]

DEFAULT_URL = "http://127.0.0.1:8750"
API_PREFIX = "/api/v1"
USER_AGENT = f"pvc-client httpx/{httpx.__version__}"

T = TypeVar("T")

_CHUNK = 1 << 20
# Requests that never reached the service: repeating them is safe whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures after the request may have been received: repeat only idempotent ones.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError,
               httpx.RemoteProtocolError, httpx.CloseError)
_RETRY_STATUSES = frozenset({502, 503, 504})
_MISSING_BATCH = 5000  # hashes per /blobs/missing request: keeps bodies well under any size cap
_MAX_EVENTS_WAIT = 60.0
# refs per POST /versions/batch: the service refuses more (its body model imports this)
VERSIONS_BATCH_LIMIT = 1000


def _read_in_larger_pieces() -> None:
    """Let httpcore read up to 1 MiB per receive instead of 64 KiB.

    A large blob arrives one receive per read size, and each costs the event
    loop about 100 us of Python: at 64 KiB that caps a download near 0.8 GB/s
    on this machine class, at 1 MiB it reaches about 1.3 GB/s. httpcore
    offers no option for it; its connections read ``READ_NUM_BYTES`` at a
    time, so the attribute is raised where it is defined (nothing else about
    httpcore changes, and a version without it is left alone).
    """
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
    except ImportError:
        return
    if getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", 0) < _CHUNK:
        AsyncHTTP11Connection.READ_NUM_BYTES = _CHUNK


_read_in_larger_pieces()


def _base_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"bad service URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"bad service URL {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    return str(parsed).rstrip("/") + API_PREFIX


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """(code, message) from an error answer, tolerating bodies that are not ours."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None, None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            return (code if isinstance(code, str) else None,
                    message if isinstance(message, str) else None)
        detail = body.get("detail")  # a framework-level answer (e.g. schema validation)
        if detail is not None:
            return None, detail if isinstance(detail, str) else _json.dumps(detail)
    return None, None


def _class_for_status(status: int) -> type[PVCError]:
    if status in (401, 403):
        return Unauthorized
    if status == 404:
        return NotFound
    if status == 409:
        return Conflict
    if 400 <= status < 500:
        return InvalidInput
    if status >= 500:
        return Unavailable
    return PVCError


def _translate(failure: httpx.Response | httpx.HTTPError, what: str) -> PVCError:
    """The one place where transport failures and error answers become the PVC error tree."""
    if isinstance(failure, httpx.Response):
        code, message = _error_body(failure)
        cls = ERROR_CODES.get(code or "") or _class_for_status(failure.status_code)
        if code == "internal":
            message = f"internal error in the PVC service: {message or 'no detail'}"
        if not message:
            message = f"{what}: HTTP {failure.status_code} {failure.reason_phrase}".rstrip()
        return cls(message, status=failure.status_code)
    if isinstance(failure, httpx.ConnectError | httpx.ConnectTimeout):
        return Unavailable(f"cannot connect to the PVC service ({what}): {failure or 'connection failed'}")
    if isinstance(failure, httpx.TimeoutException):
        return Unavailable(f"{what}: the PVC service did not answer in time ({type(failure).__name__})")
    if isinstance(failure, httpx.NetworkError | httpx.RemoteProtocolError):
        return Unavailable(f"{what}: connection to the PVC service failed: {failure}")
    if isinstance(failure, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return InvalidInput(f"bad service URL: {failure}")
    return PVCError(f"{what}: {type(failure).__name__}: {failure}")


def _retryable(failure: httpx.Response | httpx.HTTPError, idempotent: bool) -> bool:
    if isinstance(failure, httpx.Response):
        return idempotent and failure.status_code in _RETRY_STATUSES
    if isinstance(failure, _NOT_SENT):
        return True
    return idempotent and isinstance(failure, _MAYBE_SENT)


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """Stream exactly ``size`` bytes of a file (its size when the upload started)."""
    sent = 0
    async with await trio.open_file(path, "rb") as f:
        while sent < size:
            chunk = await f.read(min(_CHUNK, size - sent))
            if not chunk:
                break
            sent += len(chunk)
            yield chunk
    if sent != size:
        raise InvalidInput(f"{path}: file changed while it was being uploaded")


async def _pack_body(items: Sequence[Source]) -> AsyncIterator[bytes]:
    """A pack of ``items``, about a megabyte at a time (file reads in a worker thread)."""
    for group in frame_groups(items, _CHUNK):
        try:
            yield await trio.to_thread.run_sync(read_frames, group)
        except SourceChanged as exc:
            raise InvalidInput(str(exc)) from None


class PVCClient:
    """Async client of the PVC HTTP API (docs/api.md). Use under trio.

    ``deadline`` (seconds, optional) bounds the whole of one call, retries and
    backoff included: every attempt's timeouts are cut to what is left of it,
    and no retry starts that could not finish in time. A blob download counts
    it from its last progress, so a large transfer that keeps flowing is not
    cut, while one that stalls is. The change feed's long-poll is exempt.

    ``stats`` counts ``requests`` (attempts sent), ``retries`` (attempts that
    repeated a failed one), ``errors`` (calls that ended in a `PVCError`),
    ``bytes_in``/``bytes_out`` (bodies received/sent) and ``latency`` (total
    seconds spent waiting for answers).
    """

    # Backoff before retry n (0-based): BACKOFF_BASE * 2**n, capped, with jitter.
    BACKOFF_BASE = 0.2
    BACKOFF_CAP = 5.0
    TRANSFER_CONCURRENCY = 4
    PAGE_SIZE = 1000  # products per /products request
    # products per /index or /closure page; None asks for the whole graph at
    # once (a service older than paging refuses ``limit`` in a closure body)
    GRAPH_PAGE_SIZE: int | None = 5000

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        deadline: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 20,
    ) -> None:
        if retries < 0:
            raise InvalidInput(f"retries must be >= 0, not {retries}")
        if timeout <= 0:
            raise InvalidInput(f"timeout must be positive, not {timeout}")
        if deadline is not None and deadline <= 0:
            raise InvalidInput(f"deadline must be positive, not {deadline}")
        self.url = url
        self._deadline = deadline
        self._timeout = float(timeout)
        self._retries = retries
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token is not None:
            token = token.strip()
            if not token or any(c.isspace() or not c.isprintable() for c in token) or not token.isascii():
                raise InvalidInput("the token must be one word of printable ASCII")
            headers["Authorization"] = f"Bearer {token}"
        if transport is None:
            # Environment proxies are deliberately not consulted: the service lives on
            # the studio network, and a proxy in front of loopback breaks local use.
            transport = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections),
                retries=0,
            )
        self._http = httpx.AsyncClient(
            base_url=_base_url(url), transport=transport, headers=headers,
            timeout=httpx.Timeout(self._timeout), follow_redirects=False,
        )
        self.stats: dict[str, float] = {
            "requests": 0, "retries": 0, "errors": 0, "bytes_in": 0, "bytes_out": 0, "latency": 0.0,
        }

    async def __aenter__(self) -> PVCClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the request core ------------------------------------------------------------------

    def _backoff(self, attempt: int, failure: httpx.Response | httpx.HTTPError) -> float:
        delay = min(self.BACKOFF_CAP, self.BACKOFF_BASE * 2**attempt)
        if isinstance(failure, httpx.Response):
            try:  # the service knows best how long it will be away
                delay = max(delay, min(self.BACKOFF_CAP, float(failure.headers.get("retry-after", ""))))
            except ValueError:
                pass
        return delay * random.uniform(0.5, 1.0)

    async def _send(
        self,
        build: Callable[[], httpx.Request],
        handle: Callable[[httpx.Response], Awaitable[T]],
        *,
        idempotent: bool,
        bounded: bool = True,
        progress: Callable[[], int] | None = None,
    ) -> T:
        """Send ``build()``, retrying what is safe, and return ``handle(response)``.

        ``build`` is called once per attempt so that streamed bodies and Range
        headers start afresh; ``handle`` consumes a successful (streamed) answer.
        ``bounded`` calls obey the deadline; ``progress()`` (bytes received so
        far) restarts it when a broken transfer had moved on.
        """
        attempt = 0
        end = time.monotonic() + self._deadline if self._deadline is not None and bounded else None
        seen = progress() if progress is not None else 0
        while True:
            request = build()
            if end is not None:
                left = max(end - time.monotonic(), 0.001)
                request.extensions["timeout"] = httpx.Timeout(min(self._timeout, left)).as_dict()
            what = f"{request.method} {request.url.path.removeprefix(API_PREFIX)}"
            self.stats["requests"] += 1
            self.stats["bytes_out"] += int(request.headers.get("content-length") or 0)
            started = time.monotonic()
            failure: httpx.Response | httpx.HTTPError
            try:
                response = await self._http.send(request, stream=True)
                try:
                    if not response.is_error:
                        return await handle(response)
                    self.stats["bytes_in"] += len(await response.aread())
                    failure = response
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                failure = exc
            finally:
                self.stats["latency"] += time.monotonic() - started
            delay = self._backoff(attempt, failure)
            if end is not None and progress is not None and progress() > seen:
                seen = progress()
                end = time.monotonic() + self._deadline  # type: ignore[operator]
            out_of_time = end is not None and time.monotonic() + delay >= end
            if attempt >= self._retries or out_of_time or not _retryable(failure, idempotent):
                self.stats["errors"] += 1
                error = _translate(failure, what)
                if isinstance(failure, httpx.HTTPError):
                    raise error from failure
                raise error
            await trio.sleep(delay)
            attempt += 1
            self.stats["retries"] += 1

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
        timeout: httpx.Timeout | None = None,
        bounded: bool = True,
    ) -> Any:
        """A JSON request; ``None`` for an empty (204) answer."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}

        def build() -> httpx.Request:
            return self._http.build_request(
                method, path, params=query, json=body, **extra
            )

        async def handle(response: httpx.Response) -> Any:
            self.stats["bytes_in"] += len(await response.aread())
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise PVCError(
                    f"{method} {path}: the service answered with something that is not JSON"
                ) from None

        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT")
        return await self._send(build, handle, idempotent=idempotent, bounded=bounded)

    # -- service and products --------------------------------------------------------------

    async def health(self) -> JSON:
        return await self._json("GET", "/health")

    async def list_products(self, prefix: str | None = None, as_of: TimeArg = None) -> list[JSON]:
        """Every visible product (sorted by PRI), following the service's paging."""
        products: list[JSON] = []
        after: str | None = None
        while True:
            page, after = await self.product_page(prefix, as_of, after, self.PAGE_SIZE)
            products.extend(page)
            if after is None:
                return products

    async def product_page(self, prefix: str | None = None, as_of: TimeArg = None, after: str | None = None,
                           limit: int = 1000) -> tuple[list[JSON], str | None]:
        """One page of products (sorted by PRI) whose names sort after ``after``, and the
        ``after`` of the next page (None: this was the last), for listings that must not
        hold every name at once."""
        if not 1 <= limit <= 100_000:
            raise InvalidInput(f"a page holds 1..100000 products, not {limit}")
        params = {"prefix": prefix, "as_of": as_time(as_of), "limit": limit, "after": after}
        answer = await self._json("GET", "/products", params=params)
        page = _field(answer, "products", list)
        if "next" in answer:
            following = answer["next"]
        else:  # a service older than "next": a full page may have more after it
            following = page[-1]["pri"] if len(page) == limit else None
        if following is not None and (not isinstance(following, str) or (after is not None and following <= after)):
            raise PVCError(f"the service's product pages do not move on (next {following!r} after {after!r})")
        return page, following

    async def get_product(self, pri: str, as_of: TimeArg = None) -> JSON:
        return await self._json("GET", f"/products/{pri_path(pri)}", params={"as_of": as_time(as_of)})

    async def rename(self, old: str, new: str) -> JSON:
        new_pri = parse_pri(str(new)).text
        return await self._json("POST", f"/products/{pri_path(old)}/rename", body={"new_pri": new_pri})

    async def list_versions(self, pri: str, as_of: TimeArg = None) -> list[JSON]:
        answer = await self._json("GET", f"/products/{pri_path(pri)}/versions", params={"as_of": as_time(as_of)})
        return _field(answer, "versions", list)

    async def get_version(self, pri: str, selector: int | str = LATEST, as_of: TimeArg = None) -> JSON:
        """A Version with its manifest; ``selector`` is a number, a label or ``latest``."""
        path = f"/products/{pri_path(pri)}/versions/{version_selector(selector)}"
        return await self._json("GET", path, params={"as_of": as_time(as_of)})

    async def get_versions(self, refs: Iterable[tuple[str, int]], as_of: TimeArg = None, *,
                           missing: str = "error") -> list[JSON | None]:
        """The Version of each (pri, number), in the order given, `VERSIONS_BATCH_LIMIT` a request.

        ``missing="omit"`` answers an unknown product or version with None in
        its place instead of raising `NotFound`. Versions are immutable, so
        pages need no common time; only their ``labels`` may differ by a move
        between two pages.
        """
        texts = [exact_ref(f"{pri}@{number}", "a version") for pri, number in refs]
        body: JSON = {"as_of": as_time(as_of)}
        if missing != "error":
            body["missing"] = missing
        out: list[JSON | None] = []
        for start in range(0, len(texts), VERSIONS_BATCH_LIMIT):
            page = texts[start:start + VERSIONS_BATCH_LIMIT]
            answer = await self._json("POST", "/versions/batch", body={**body, "versions": page}, idempotent=True)
            found = _field(answer, "versions", list)
            if len(found) != len(page):
                raise PVCError(f"the service answered {len(found)} versions for {len(page)} asked")
            out.extend(found)
        return out

    async def resolve(self, ref: str, as_of: TimeArg = None) -> JSON:
        """``PRI``, ``PRI@N`` or ``PRI@label`` -> its Version (versionless = newest visible)."""
        parsed = parse_ref(str(ref))
        return await self.get_version(parsed.pri.text, parsed.selector or LATEST, as_of)

    async def publish(
        self,
        pri: str,
        manifest: Iterable[JSON],
        *,
        dependencies: Sequence[str] = (),
        labels: Sequence[str] = (),
        message: str = "",
        author: str | None = None,
        at: TimeArg = None,
        workspace: JSON | None = None,
    ) -> JSON:
        """Publish a version (the first publish creates the product). Not retried once sent:
        a lost answer could otherwise publish twice.

        ``workspace`` (``{"name", "revision"}``, or a Workspace record) records
        the workspace revision the version was made in; the service refuses
        (404) one that does not exist.
        """
        body = _publish_body(manifest, dependencies=dependencies, labels=labels, message=message, author=author,
                             at=at, workspace=workspace)
        return await self._json("POST", f"/products/{pri_path(pri)}/versions", body=body)

    async def publish_many(self, publications: Sequence[tuple[str, Iterable[JSON], Mapping[str, Any]]]) -> list[JSON]:
        """Publish many versions in one request and one transaction at the service: all of them,
        or none (the error names the first refused, by its index). Each is ``(pri, manifest,
        keywords of `publish`)``; at most `PUBLISH_BATCH_LIMIT`. Not retried once sent."""
        if not 0 < len(publications) <= PUBLISH_BATCH_LIMIT:
            raise InvalidInput(f"{len(publications)} versions: a batch publishes 1 to {PUBLISH_BATCH_LIMIT}")
        body = {"publications": [{"pri": parse_pri(str(pri)).text, **_publish_body(manifest, **kwargs)}
                                 for pri, manifest, kwargs in publications]}
        return (await self._json("POST", "/versions/publish", body=body))["versions"]

    async def publish_directory(
        self,
        pri: str,
        directory: str | os.PathLike[str],
        *,
        dependencies: Sequence[str] = (),
        labels: Sequence[str] = (),
        message: str = "",
        author: str | None = None,
        at: TimeArg = None,
        progress: Progress | None = None,
        workspace: JSON | None = None,
    ) -> JSON:
        """Scan, upload the blobs the store lacks, then publish. Returns the Version.

        ``workspace`` as in `publish`."""
        return await publish_directory(
            self, pri, directory, dependencies=dependencies, labels=labels, message=message,
            author=author, at=at, progress=progress, workspace=workspace,
        )

    async def publish_directories(self, items: Sequence[Publication], *,
                                  progress: Progress | None = None) -> list[JSON]:
        """Publish many directories, each as the next version of its product, in one transfer.

        Every tree is hashed and its blobs stored before any version is
        published: a failure then publishes nothing. Returns the Versions in
        the order of ``items`` (`pvc_client._publish`).
        """
        return await publish_directories(self, items, progress=progress)

    # -- labels ----------------------------------------------------------------------------

    async def labels(self, pri: str, as_of: TimeArg = None) -> dict[str, int]:
        answer = await self._json("GET", f"/products/{pri_path(pri)}/labels", params={"as_of": as_time(as_of)})
        return _field(answer, "labels", dict)

    async def move_label(self, pri: str, label: str, number: int, *, author: str | None = None) -> JSON:
        body: JSON = {"version": int(version_selector(number))}
        if author is not None:
            body["author"] = author
        return await self._json("PUT", f"/products/{pri_path(pri)}/labels/{check_label(label, settable=True)}", body=body)

    async def delete_label(self, pri: str, label: str) -> None:
        # Not retried: a repeated DELETE after a lost answer would report a false not-found.
        await self._json("DELETE", f"/products/{pri_path(pri)}/labels/{check_label(label, settable=True)}")

    async def label_history(self, pri: str, label: str) -> list[JSON]:
        answer = await self._json("GET", f"/products/{pri_path(pri)}/labels/{check_label(label)}/history")
        return _field(answer, "history", list)

    # -- blobs -----------------------------------------------------------------------------

    async def missing_blobs(self, shas: Iterable[str]) -> list[str]:
        """The subset of ``shas`` the store does not hold (asked in batches; a pure query)."""
        wanted = list(dict.fromkeys(shas))
        missing: list[str] = []
        for i in range(0, len(wanted), _MISSING_BATCH):
            batch = wanted[i:i + _MISSING_BATCH]
            answer = await self._json("POST", "/blobs/missing", body={"sha256": batch}, idempotent=True)
            missing.extend(_field(answer, "missing", list))
        return missing

    async def upload_blob(self, sha: str, source: bytes | os.PathLike[str] | str) -> JSON:
        """Store a blob from bytes or a file (streamed from disk). The service checks the hash."""
        path = f"/blobs/{check_sha(sha)}"
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)

            def build() -> httpx.Request:
                return self._http.build_request(
                    "PUT", path, content=data, headers={"Content-Type": "application/octet-stream"}
                )
        else:
            file = Path(source)

            def build() -> httpx.Request:
                size = file.stat().st_size
                return self._http.build_request(
                    "PUT", path, content=_file_chunks(file, size),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                )

        async def handle(response: httpx.Response) -> JSON:
            self.stats["bytes_in"] += len(await response.aread())
            return response.json()

        return await self._send(build, handle, idempotent=True)

    async def upload_pack(self, items: Sequence[Source]) -> JSON:
        """Store many small blobs in one request: ``(sha, bytes or file, size)`` each.

        All or nothing on the service's side (it checks every hash), so a
        failed attempt is simply sent again. Files are read a batch at a time
        in a worker thread; one whose size changed since it was scanned is
        refused.
        """
        if not items:
            return {"blobs": 0, "bytes": 0, "created": 0}
        if len(items) > PACK_MAX_BLOBS:
            raise InvalidInput(f"a pack carries at most {PACK_MAX_BLOBS} blobs, not {len(items)}")
        for sha, _, size in items:
            check_sha(sha)
            if size > PACK_BLOB_LIMIT:
                raise InvalidInput(f"blob {sha[:12]}... of {size} bytes is too large for a pack")
        length = sum(len(frame_header(sha, size)) + size for sha, _, size in items)

        def build() -> httpx.Request:
            return self._http.build_request(
                "POST", "/blobs/batch/put", content=_pack_body(items),
                headers={"Content-Type": PACK_TYPE, "Content-Length": str(length)},
            )

        async def handle(response: httpx.Response) -> JSON:
            self.stats["bytes_in"] += len(await response.aread())
            return response.json()

        return await self._send(build, handle, idempotent=True)

    async def download_pack(self, shas: Sequence[str], deliver: Callable[[list[Frame]], Awaitable[None]]) -> int:
        """Fetch many small blobs in one request; ``deliver`` gets them as they arrive, verified.

        ``deliver`` is awaited with each run of complete frames, every one of
        which hashes to its name (a frame that does not raises `PVCError`
        before it is delivered). A transfer broken midway asks again for the
        blobs not yet delivered, so each is delivered exactly once. Returns
        the bytes delivered.
        """
        left = dict.fromkeys(check_sha(sha) for sha in shas)
        if len(left) > PACK_MAX_BLOBS:
            raise InvalidInput(f"a pack carries at most {PACK_MAX_BLOBS} blobs, not {len(left)}")
        delivered = 0

        def build() -> httpx.Request:
            return self._http.build_request(
                "POST", "/blobs/batch/get", json={"sha256": list(left)},
                headers={"Accept": PACK_TYPE, "Accept-Encoding": "identity"},
            )

        async def handle(response: httpx.Response) -> int:
            nonlocal delivered
            parser = PackParser(max_blob=PACK_BLOB_LIMIT, expect=left)
            try:
                async for chunk in response.aiter_bytes():
                    self.stats["bytes_in"] += len(chunk)
                    frames = parser.feed(chunk)
                    if not frames:
                        continue
                    for frame in frames:
                        if not frame.ok:
                            raise PVCError(f"blob {frame.sha256[:12]}... arrived corrupted in a pack "
                                           f"({len(frame.data)} bytes that hash to something else)")
                    await deliver(frames)
                    for frame in frames:
                        del left[frame.sha256]
                        delivered += len(frame.data)
                parser.finish()
            except PackError as exc:
                raise PVCError(f"the service sent a malformed pack: {exc}") from None
            if left:
                raise PVCError(f"the service's pack lacked {len(left)} of the blobs asked for")
            return delivered

        if not left:
            return 0
        return await self._send(build, handle, idempotent=True, progress=lambda: delivered)

    async def has_blob(self, sha: str) -> int | None:
        """The blob's size if the store holds it, else None."""
        try:
            response = await self._send(
                lambda: self._http.build_request("HEAD", f"/blobs/{check_sha(sha)}"), _keep, idempotent=True
            )
        except NotFound:
            return None
        return int(response.headers.get("content-length", 0))

    async def download_blob(
        self, sha: str, sink: BinaryIO | IO[bytes], *, offset: int = 0, length: int | None = None
    ) -> int:
        """Stream a blob (or the byte range ``offset``..``offset+length``) into ``sink``.

        Returns the bytes written. A transfer broken midway resumes where it
        stopped. The content is NOT verified here: the caller checks the hash.
        """
        if offset < 0 or (length is not None and length < 0):
            raise InvalidInput("offset and length must be >= 0")
        if length == 0:
            return 0
        path = f"/blobs/{check_sha(sha)}"
        written = 0

        def build() -> httpx.Request:
            start = offset + written
            # identity: Range offsets must count stored bytes, not a compressed form of them
            headers = {"Accept": "application/octet-stream", "Accept-Encoding": "identity"}
            if start or length is not None:
                end = "" if length is None else str(offset + length - 1)
                headers["Range"] = f"bytes={start}-{end}"
            return self._http.build_request("GET", path, headers=headers)

        async def handle(response: httpx.Response) -> int:
            nonlocal written
            start = offset + written
            skip = start if response.status_code == 200 else 0  # a server that ignored Range
            remaining = None if length is None else length - written
            async for chunk in response.aiter_bytes():
                self.stats["bytes_in"] += len(chunk)
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                if remaining is not None:
                    chunk = chunk[:remaining]
                    remaining -= len(chunk)
                if chunk:
                    sink.write(chunk)
                    written += len(chunk)
                if remaining == 0:
                    break
            return written

        return await self._send(build, handle, idempotent=True, progress=lambda: written)

    # -- graph and events ------------------------------------------------------------------

    async def index(self, as_of: TimeArg = None, prefix: str | None = None) -> JSON:
        """The Graph of every visible product (whose PRI starts with ``prefix``), asked
        `GRAPH_PAGE_SIZE` products at a time and merged: one answer, as of one time."""
        params: dict[str, Any] = {"as_of": as_time(as_of), "prefix": prefix, "limit": self.GRAPH_PAGE_SIZE}

        async def page(after: str | None, pinned: str | None) -> JSON:
            if pinned is not None:
                params["as_of"] = pinned
            return await self._json("GET", "/index", params={**params, "after": after})

        return await _merged_pages(page, "index")

    async def closure(self, roots: Iterable[str], as_of: TimeArg = None, *, depth: int | None = None,
                      missing: str = "error") -> JSON:
        """The Graph reachable from ``roots`` (``depth`` levels; None: all), asked
        `GRAPH_PAGE_SIZE` products at a time and merged.

        ``missing="omit"`` answers an unknown root with a null ``pri`` in
        ``roots`` instead of raising `NotFound`.
        """
        body: JSON = {"roots": [any_ref(r) for r in roots], "as_of": as_time(as_of)}
        if depth is not None:
            body["depth"] = depth
        if missing != "error":
            body["missing"] = missing
        if self.GRAPH_PAGE_SIZE is not None:
            body["limit"] = self.GRAPH_PAGE_SIZE

        async def page(after: int | None, pinned: str | None) -> JSON:
            if pinned is not None:
                body["as_of"] = pinned
            extra = {} if after is None else {"after": after}
            return await self._json("POST", "/closure", body={**body, **extra}, idempotent=True)

        return await _merged_pages(page, "closure")

    async def events(self, after: int = 0, timeout: float = 0.0, limit: int = 1000) -> JSON:
        """``{"events": [...], "cursor": N}``; waits up to ``timeout`` seconds for news."""
        if not 0 <= timeout <= _MAX_EVENTS_WAIT:
            raise InvalidInput(f"events timeout must be within 0..{_MAX_EVENTS_WAIT:g} seconds")
        if after < 0 or limit < 1:
            raise InvalidInput("after must be >= 0 and limit >= 1")
        # The service holds the answer up to `timeout`: the read timeout must outlast it.
        wait = httpx.Timeout(self._timeout, read=timeout + self._timeout)
        params = {"after": after, "timeout": timeout, "limit": limit}
        return await self._json("GET", "/events", params=params, timeout=wait, bounded=False)

    # -- workspaces and snapshots ----------------------------------------------------------

    async def list_workspaces(self) -> list[JSON]:
        return _field(await self._json("GET", "/workspaces"), "workspaces", list)

    async def get_workspace(self, name: str, as_of: TimeArg = None) -> JSON:
        return await self._json("GET", f"/workspaces/{path_segment(name, 'workspace name')}",
                                params={"as_of": as_time(as_of)})

    async def put_workspace(self, name: str, spec: JSON) -> JSON:
        """Create or replace a workspace (a full record: PUT is safe to repeat)."""
        return await self._json("PUT", f"/workspaces/{path_segment(name, 'workspace name')}",
                                body=workspace_spec(spec))

    async def delete_workspace(self, name: str) -> None:
        await self._json("DELETE", f"/workspaces/{path_segment(name, 'workspace name')}")

    async def workspace_history(self, name: str) -> list[JSON]:
        answer = await self._json("GET", f"/workspaces/{path_segment(name, 'workspace name')}/history")
        return _field(answer, "history", list)

    async def declared_outputs(self, pri: str, as_of: TimeArg = None) -> JSON:
        """``{"pri", "workspaces": [{"name", "revision", "changed_at", "author"}]}``: the workspaces
        whose newest revision (as of the time) declares the product ``pri`` an output, by name."""
        return await self._json("GET", f"/outputs/{pri_path(pri)}", params={"as_of": as_time(as_of)})

    async def create_snapshot(self, record: JSON) -> JSON:
        if not isinstance(record, dict):
            raise InvalidInput("a snapshot record is a JSON object")
        # The id is the hash of the record: posting it twice names the same snapshot.
        return await self._json("POST", "/snapshots", body={"record": record}, idempotent=True)

    async def get_snapshot(self, id: str) -> JSON:
        return await self._json("GET", f"/snapshots/{path_segment(id, 'snapshot id')}")

    # -- whole trees -----------------------------------------------------------------------

    async def materialize(
        self,
        ref: str,
        directory: str | os.PathLike[str],
        *,
        as_of: TimeArg = None,
        progress: Progress | None = None,
    ) -> JSON:
        """Write the version ``ref`` names into ``directory`` (absent or empty); verify every file."""
        return await materialize(self, ref, directory, as_of=as_of, progress=progress)


async def _merged_pages(page: Callable[[Any, str | None], Awaitable[JSON]], what: str) -> JSON:
    """The pages of one Graph merged into the answer an unpaged request gets.

    ``page(after, as_of)`` asks for one page. Every page after the first is
    asked as of the time the first one answered, so that all of them show
    one state of the store; the first page's ``cursor`` (and ``roots``) is
    the merged answer's. A service that does not page answers no ``next``:
    its one answer is the whole graph.
    """
    first = await page(None, None)
    products = dict(_field(first, "products", dict))
    following = first.get("next")
    while following is not None:
        answer = await page(following, _field(first, "as_of", str))
        after, following = following, answer.get("next")
        if following is not None and (type(following) is not type(after) or not following > after):
            raise PVCError(f"the service's {what} pages do not move on (next {following!r} after {after!r})")
        products.update(_field(answer, "products", dict))
    # in name order, as one answer has them (a closure's pages are by product id)
    return {**first, "products": dict(sorted(products.items())), "next": None}


def _field(answer: Any, key: str, kind: type[T]) -> T:
    """``answer[key]``, or a clear error when the service's answer lacks the documented shape."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise PVCError(f"the service's answer lacks {key!r} ({kind.__name__}): is it a PVC service?")
    return value


async def _keep(response: httpx.Response) -> httpx.Response:
    return response


def _publish_body(manifest: Iterable[JSON], *, dependencies: Sequence[str] = (), labels: Sequence[str] = (),
                  message: str = "", author: str | None = None, at: TimeArg = None,
                  workspace: JSON | None = None) -> JSON:
    body: JSON = {
        "manifest": normalize_manifest(manifest),
        "dependencies": [exact_ref(d, "dependency") for d in dependencies],
        "labels": [check_label(label, settable=True) for label in labels],
        "message": message,
    }
    if author is not None:
        body["author"] = author
    if at is not None:
        body["at"] = as_time(at)
    if workspace is not None:  # only when given: a service that predates origins refuses the key
        body["workspace"] = workspace_origin(workspace)
    return body
