"""Error translation and retries of the PVC client, over a scripted transport."""

from __future__ import annotations

import httpx
import pytest
import trio

from pvc_client import (
    Conflict,
    InvalidInput,
    InvalidPRI,
    InvalidTime,
    NotFound,
    PVCClient,
    PVCError,
    Unauthorized,
    Unavailable,
)
from pvc_mock import Script, error, run

SHA = "a" * 64
MANIFEST = [{"path": "a.txt", "type": "file", "mode": 0o644, "size": 1, "sha256": SHA}]

# Every code of docs/api.md, with its status and the class it must become.
CODES = [
    ("invalid", 400, InvalidInput),
    ("invalid", 422, InvalidInput),
    ("invalid_pri", 400, InvalidPRI),
    ("invalid_time", 400, InvalidTime),
    ("invalid_manifest", 400, InvalidInput),
    ("hash_mismatch", 400, InvalidInput),
    ("unauthorized", 401, Unauthorized),
    ("forbidden", 403, Unauthorized),
    ("not_found", 404, NotFound),
    ("conflict", 409, Conflict),
    ("payload_too_large", 413, InvalidInput),
    ("unavailable", 503, Unavailable),
    ("internal", 500, Unavailable),
]


@pytest.mark.parametrize(("code", "status", "cls"), CODES)
def test_error_codes_become_the_one_tree(code: str, status: int, cls: type[PVCError]) -> None:
    script = Script(error(status, code, f"the {code} message"))

    async def main() -> None:
        async with script.client(retries=0) as c:
            with pytest.raises(PVCError) as info:
                await c.get_product("spies-lgt")
        assert type(info.value) is cls
        assert info.value.status == status
        assert f"the {code} message" in str(info.value)

    run(main)


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, InvalidInput), (401, Unauthorized), (403, Unauthorized), (404, NotFound), (405, InvalidInput),
     (409, Conflict), (413, InvalidInput), (422, InvalidInput), (500, Unavailable), (502, Unavailable),
     (503, Unavailable), (504, Unavailable)],
)
def test_non_json_error_bodies_map_by_status(status: int, cls: type[PVCError]) -> None:
    script = Script(httpx.Response(status, text="<html>proxy says no</html>",
                                   headers={"content-type": "text/html"}))

    async def main() -> None:
        async with script.client(retries=0) as c:
            with pytest.raises(PVCError) as info:
                await c.list_versions("spies-lgt")
        assert type(info.value) is cls
        assert str(status) in str(info.value)
        assert "/products/spies-lgt/versions" in str(info.value)

    run(main)


def test_framework_validation_detail_is_reported() -> None:
    detail = [{"loc": ["body", "manifest"], "msg": "field required"}]
    script = Script(httpx.Response(422, json={"detail": detail}))

    async def main() -> None:
        async with script.client() as c:
            with pytest.raises(InvalidInput, match="field required"):
                await c.rename("spies-lgt", "spies-fx")

    run(main)


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.ReadTimeout("slow"),
     httpx.ReadError("reset"), httpx.RemoteProtocolError("closed"), httpx.PoolTimeout("busy")],
)
def test_transport_failures_become_unavailable(exc: Exception) -> None:
    script = Script(exc)

    async def main() -> None:
        async with script.client(retries=0) as c:
            with pytest.raises(Unavailable) as info:
                await c.health()
        assert info.value.__cause__ is exc
        assert c.stats["errors"] == 1

    run(main)


def test_idempotent_get_is_retried_with_backoff() -> None:
    script = Script(error(503, "unavailable"), httpx.ReadTimeout("slow"), httpx.Response(200, json={"status": "ok"}))

    async def main() -> None:
        async with script.client(retries=3) as c:
            start = trio.current_time()
            assert await c.health() == {"status": "ok"}
            waited = trio.current_time() - start
        assert len(script.requests) == 3
        assert c.stats["requests"] == 3 and c.stats["retries"] == 2 and c.stats["errors"] == 0
        # two backoffs of at least half their nominal length (jitter keeps 50..100%)
        assert waited >= 0.5 * (c.BACKOFF_BASE + 2 * c.BACKOFF_BASE)

    run(main)


def test_retries_stop_after_the_limit() -> None:
    script = Script(error(502, "unavailable", "gateway down"))

    async def main() -> None:
        async with script.client(retries=2) as c:
            with pytest.raises(Unavailable, match="gateway down"):
                await c.labels("spies-lgt")
        assert len(script.requests) == 3
        assert c.stats["retries"] == 2 and c.stats["errors"] == 1

    run(main)


def test_retry_after_is_honoured() -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "3"}, json={}), httpx.Response(200, json={}))

    async def main() -> None:
        async with script.client() as c:
            start = trio.current_time()
            await c.health()
            assert trio.current_time() - start >= 1.5  # 3 s, less at most half for jitter

    run(main)


@pytest.mark.parametrize("failure", [error(503, "unavailable"), httpx.ReadTimeout("lost answer")])
def test_publish_is_not_retried_once_sent(failure: httpx.Response | Exception) -> None:
    script = Script(failure, httpx.Response(201, json={"number": 1}))

    async def main() -> None:
        async with script.client(retries=3) as c:
            with pytest.raises(Unavailable):
                await c.publish("spies-lgt", MANIFEST)
        assert len(script.requests) == 1

    run(main)


def test_publish_is_retried_when_it_never_left() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(201, json={"number": 1}))

    async def main() -> None:
        async with script.client(retries=3) as c:
            assert (await c.publish("spies-lgt", MANIFEST))["number"] == 1
        assert len(script.requests) == 2
        assert script.json_body(0) == script.json_body(1)

    run(main)


def test_rename_and_label_delete_are_not_retried() -> None:
    script = Script(error(504, "unavailable"))

    async def main() -> None:
        async with script.client(retries=3) as c:
            with pytest.raises(Unavailable):
                await c.rename("spies-lgt", "spies-fx")
            with pytest.raises(Unavailable):
                await c.delete_label("spies-lgt", "approved")
        assert [r.method for r in script.requests] == ["POST", "DELETE"]

    run(main)


def test_idempotent_writes_and_queries_are_retried() -> None:
    ok = {"label": "approved", "version": 2, "moved_at": "x", "missing": [], "sha256": SHA, "size": 1,
          "products": {}}

    async def main() -> None:
        for call in (
            lambda c: c.move_label("spies-lgt", "approved", 2),
            lambda c: c.upload_blob(SHA, b"x"),
            lambda c: c.put_workspace("shot", {"roots": ["spies-lgt"]}),
            lambda c: c.missing_blobs([SHA]),
            lambda c: c.closure(["spies-lgt@2"]),
            lambda c: c.create_snapshot({"a": 1}),
        ):
            script = Script(error(503, "unavailable"), httpx.Response(200, json=ok))
            async with script.client(retries=1) as c:
                await call(c)
            assert len(script.requests) == 2, script.requests[0]
            assert script.bodies[0] == script.bodies[1]

    run(main)


def test_errors_that_retrying_cannot_fix_are_not_retried() -> None:
    for reply in (error(404, "not_found"), error(500, "internal", "bug"), error(409, "conflict"),
                  error(401, "unauthorized")):
        script = Script(reply)

        async def main(script: Script = script) -> None:
            async with script.client(retries=3) as c:
                with pytest.raises(PVCError):
                    await c.get_version("spies-lgt", 3)
            assert len(script.requests) == 1

        run(main)


def test_internal_errors_say_so() -> None:
    script = Script(error(500, "internal", "request 9f2 failed"))

    async def main() -> None:
        async with script.client() as c:
            with pytest.raises(Unavailable, match="internal error in the PVC service: request 9f2"):
                await c.health()

    run(main)


def test_a_service_that_never_answers_times_out() -> None:
    """A real socket that accepts and stays silent: the httpx read timeout fires."""

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        accepted: list[trio.SocketStream] = []

        async def silent(stream: trio.SocketStream) -> None:
            accepted.append(stream)
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, silent, listeners)
            async with PVCClient(f"http://127.0.0.1:{port}", timeout=0.3, retries=1) as c:
                with pytest.raises(Unavailable, match="did not answer in time"):
                    await c.health()
                assert c.stats["requests"] == 2
            nursery.cancel_scope.cancel()
        assert len(accepted) >= 1

    trio.run(main)


def test_nothing_listening_is_unavailable() -> None:
    async def main() -> None:
        with trio.socket.socket() as s:  # a port that was just free and has no listener
            await s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        async with PVCClient(f"http://127.0.0.1:{port}", retries=0) as c:
            with pytest.raises(Unavailable, match="cannot connect"):
                await c.health()

    trio.run(main)


def test_answer_that_is_not_json_is_an_error() -> None:
    script = Script(httpx.Response(200, text="<html>captive portal</html>"))

    async def main() -> None:
        async with script.client() as c:
            with pytest.raises(PVCError, match="not JSON"):
                await c.health()

    run(main)
