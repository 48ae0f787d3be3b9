"""What the PVC client sends: encoding, times, local validation, paging, ranges, statistics."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import httpx
import pytest

from pvc_client import InvalidInput, InvalidPRI, InvalidTime, PVCClient, PVCError, Unavailable, parse_time
from pvc_mock import Script, range_server, run

SHA = "b" * 64
UTC = dt.timezone.utc


def test_pris_are_path_encoded_and_validated() -> None:
    script = Script(httpx.Response(200, json={"number": 1}))

    async def main() -> None:
        async with script.client() as c:
            await c.get_version("spies:100:10-lgt:walter", "approved")
            await c.get_version("spies:100:10-lgt:walter", 12)
            await c.get_version("spies-lgt")
            await c.get_workspace("shot 10/lighting é")
        paths = [r.url.raw_path.split(b"?")[0] for r in script.requests]
        assert paths == [
            b"/api/v1/products/spies:100:10-lgt:walter/versions/approved",
            b"/api/v1/products/spies:100:10-lgt:walter/versions/12",
            b"/api/v1/products/spies-lgt/versions/latest",
            b"/api/v1/workspaces/shot%2010%2Flighting%20%C3%A9",
        ]

    run(main)


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda c: c.get_product("no_dash"), InvalidPRI),
        (lambda c: c.get_product("spies-lgt/../x"), InvalidPRI),
        (lambda c: c.get_version("spies-lgt@3"), InvalidPRI),
        (lambda c: c.get_version("spies-lgt", 0), InvalidInput),
        (lambda c: c.get_version("spies-lgt", "007"), InvalidInput),
        (lambda c: c.get_version("spies-lgt", "Approved"), InvalidPRI),
        (lambda c: c.rename("spies-lgt", "bad name"), InvalidPRI),
        (lambda c: c.move_label("spies-lgt", "latest", 2), InvalidInput),
        (lambda c: c.publish("spies-lgt", [], dependencies=["spies-tex@approved"]), InvalidInput),
        (lambda c: c.publish("spies-lgt", [{"path": "../x", "type": "dir"}]), InvalidInput),
        (lambda c: c.download_blob("NOTAHASH", io.BytesIO()), InvalidInput),
        (lambda c: c.closure(["spies-lgt@1.2.5"]), InvalidPRI),
        (lambda c: c.events(timeout=61), InvalidInput),
        (lambda c: c.list_versions("spies-lgt", as_of="yesterday"), InvalidTime),
        (lambda c: c.labels("spies-lgt", as_of=dt.datetime(2020, 1, 1)), InvalidTime),
        (lambda c: c.put_workspace("shot", {"roots": ["x"]}), InvalidPRI),
        (lambda c: c.put_workspace("shot", {"roots": [], "pin": "soon"}), InvalidTime),
        (lambda c: c.get_workspace(""), InvalidInput),
        # workspace outputs and version origins
        (lambda c: c.put_workspace("shot", {"outputs": ["spies-lgt@3"]}), InvalidPRI),
        (lambda c: c.put_workspace("shot", {"outputs": ["spies-lgt@approved"]}), InvalidPRI),
        (lambda c: c.put_workspace("shot", {"outputs": ["approved"]}), InvalidPRI),
        (lambda c: c.declared_outputs("spies-lgt@3"), InvalidPRI),
        (lambda c: c.declared_outputs("spies-lgt", as_of="soon"), InvalidTime),
        (lambda c: c.publish("spies-lgt", [], workspace={"name": "lgt"}), InvalidInput),
        (lambda c: c.publish("spies-lgt", [], workspace={"name": "lgt", "revision": 0}), InvalidInput),
        (lambda c: c.publish("spies-lgt", [], workspace={"name": "lgt", "revision": True}), InvalidInput),
        (lambda c: c.publish("spies-lgt", [], workspace={"name": "", "revision": 1}), InvalidInput),
        (lambda c: c.publish("spies-lgt", [], workspace="lgt"), InvalidInput),
    ],
)
def test_bad_input_is_refused_before_any_request(call, exc: type[Exception]) -> None:
    script = Script()

    async def main() -> None:
        async with script.client() as c:
            with pytest.raises(exc):
                await call(c)
        assert script.requests == []

    run(main)


def test_times_are_sent_absolute_in_utc() -> None:
    script = Script(httpx.Response(200, json={"versions": [], "labels": {}, "number": 1}))

    async def main() -> None:
        async with script.client() as c:
            before = dt.datetime.now(UTC)
            await c.list_versions("spies-lgt", as_of="-3d")
            await c.labels("spies-lgt", as_of="2019-01-24T19:00:00+01:00")
            await c.get_product("spies-lgt", as_of=dt.datetime(2019, 1, 24, 18, tzinfo=UTC))
            await c.publish("spies-lgt", [], at="2019-01-24")
            await c.put_workspace("shot", {"roots": ["spies-lgt"], "pin": "-1h"})
        relative = parse_time(script.requests[0].url.params["as_of"])
        assert abs(relative - (before - dt.timedelta(days=3))) < dt.timedelta(minutes=1)
        assert script.requests[0].url.params["as_of"].endswith("Z")
        assert script.requests[1].url.params["as_of"] == "2019-01-24T18:00:00.000000Z"
        assert script.requests[2].url.params["as_of"] == "2019-01-24T18:00:00.000000Z"
        assert script.json_body(3)["at"] == "2019-01-24T23:59:59.999999Z"
        pin = parse_time(script.json_body(4)["pin"])
        assert abs(pin - (before - dt.timedelta(hours=1))) < dt.timedelta(minutes=1)

    run(main)


def test_no_time_means_no_as_of() -> None:
    script = Script(httpx.Response(200, json={"versions": []}))

    async def main() -> None:
        async with script.client() as c:
            await c.list_versions("spies-lgt")
        assert "as_of" not in script.requests[0].url.params

    run(main)


def test_publish_body_follows_the_contract() -> None:
    script = Script(httpx.Response(201, json={"ref": "spies-lgt@1"}))
    manifest = [{"path": "geo/a.usd", "type": "file", "size": 3, "sha256": SHA, "mode": 0o644}]

    async def main() -> None:
        async with script.client() as c:
            await c.publish("spies-lgt", manifest, dependencies=["spies-tex@2"], labels=["published"],
                            message="first", author="lighting")
        body = script.json_body()
        assert body["manifest"] == [
            {"path": "geo", "type": "dir", "mode": 0o755},
            {"path": "geo/a.usd", "type": "file", "mode": 0o644, "size": 3, "sha256": SHA},
        ]
        assert body["dependencies"] == ["spies-tex@2"]
        assert body["labels"] == ["published"] and body["message"] == "first"
        assert body["author"] == "lighting" and "at" not in body
        assert script.requests[0].method == "POST"

    run(main)


def test_token_is_sent_as_bearer() -> None:
    script = Script(httpx.Response(200, json={}))

    async def main() -> None:
        async with script.client(token="s3cret\n") as c:
            await c.health()
        assert script.requests[0].headers["authorization"] == "Bearer s3cret"

    run(main)
    with pytest.raises(InvalidInput):
        Script().client(token="two words")
    with pytest.raises(InvalidInput):
        PVCClient("ftp://example.org")


def test_products_are_paged_to_the_end() -> None:
    names = sorted(f"show-asset:a{i:04d}" for i in range(2345))

    def page(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        limit = int(request.url.params["limit"])
        rest = [n for n in names if after is None or n > after]
        return httpx.Response(200, json={"products": [{"pri": n} for n in rest[:limit]]})

    script = Script(page)

    async def main() -> None:
        async with script.client() as c:
            products = await c.list_products(prefix="show", as_of="2020-01-01")
        assert [p["pri"] for p in products] == names
        assert len(script.requests) == 3
        assert {r.url.params["as_of"] for r in script.requests} == {"2020-01-01T23:59:59.999999Z"}
        assert all(r.url.params["prefix"] == "show" for r in script.requests)

    run(main)


def test_graph_pages_follow_next_as_of_the_first_page() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        after = body.get("after", 0)
        ids = [i for i in range(1, 6) if i > after][:body["limit"]]
        following = ids[-1] if ids and ids[-1] < 5 else None
        return httpx.Response(200, json={
            "as_of": "2020-01-01T00:00:00.000000Z" if "after" not in body else body["as_of"],
            "cursor": 40 + after, "roots": [{"ref": "r-x", "pri": "r-x", "number": 1}], "next": following,
            "products": {f"p{i}-x": {"product_id": i} for i in ids}})

    script = Script(page)

    async def main() -> None:
        async with script.client() as c:
            c.GRAPH_PAGE_SIZE = 2
            graph = await c.closure(["r-x"], depth=1)
        assert list(graph["products"]) == [f"p{i}-x" for i in range(1, 6)]
        assert (graph["cursor"], graph["next"], graph["as_of"]) == (40, None, "2020-01-01T00:00:00.000000Z")
        bodies = [json.loads(b) for b in script.bodies]
        assert [b.get("after") for b in bodies] == [None, 2, 4]
        assert [b["as_of"] for b in bodies] == [None] + ["2020-01-01T00:00:00.000000Z"] * 2
        assert all(b["depth"] == 1 and b["limit"] == 2 and b["roots"] == ["r-x"] for b in bodies)

    run(main)


def test_graphs_from_a_service_that_does_not_page_and_pages_that_do_not_move_on() -> None:
    graph = {"as_of": "2020-01-01T00:00:00.000000Z", "cursor": 3, "products": {"a-x": {}}}
    script = Script(httpx.Response(200, json=graph))

    async def main() -> None:
        async with script.client() as c:
            assert (await c.index())["products"] == {"a-x": {}}
            assert (await c.closure(["a-x"]))["products"] == {"a-x": {}}
        assert len(script.requests) == 2  # no "next": the one answer was the whole graph
        stuck = Script(httpx.Response(200, json={**graph, "next": "a-x"}))
        async with stuck.client() as c:
            with pytest.raises(PVCError, match="do not move on"):
                await c.index()
        assert len(stuck.requests) == 2

    run(main)


def test_versions_are_asked_in_pages_of_the_service_limit() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(200, json={"versions": [
            None if ref.endswith("@7") else {"ref": ref} for ref in body["versions"]]})

    script = Script(page)
    refs = [(f"show-asset:a{i:04d}", 1 + i % 9) for i in range(2345)]

    async def main() -> None:
        async with script.client() as c:
            found = await c.get_versions(refs, as_of="2020-01-01", missing="omit")
            assert await c.get_versions([]) == []
            with pytest.raises(InvalidInput):
                await c.get_versions([("show-asset:a", 0)])
            with pytest.raises(InvalidPRI):
                await c.get_versions([("not a pri", 1)])
        assert [None if v is None else v["ref"] for v in found] == [
            None if n == 7 else f"{pri}@{n}" for pri, n in refs]
        bodies = [json.loads(b) for b in script.bodies]
        assert [len(b["versions"]) for b in bodies] == [1000, 1000, 345]
        assert all(r.url.path == "/api/v1/versions/batch" and r.method == "POST" for r in script.requests)
        assert all(b["as_of"] == "2020-01-01T23:59:59.999999Z" and b["missing"] == "omit" for b in bodies)

    run(main)

    short = Script(httpx.Response(200, json={"versions": [{"ref": "a-x@1"}]}))

    async def answers_fewer() -> None:
        async with short.client() as c:
            with pytest.raises(PVCError, match="answered 1 versions for 2"):
                await c.get_versions([("a-x", 1), ("a-x", 2)])
            assert "missing" not in short.json_body()

    run(answers_fewer)


DATA = bytes(range(256)) * 1000


@pytest.mark.parametrize("honour_range", [True, False])
@pytest.mark.parametrize(("offset", "length"), [(0, None), (1000, None), (0, 10), (12345, 4321), (255999, 5)])
def test_download_ranges(honour_range: bool, offset: int, length: int | None) -> None:
    script = Script(range_server(DATA, honour_range=honour_range))

    async def main() -> None:
        sink = io.BytesIO()
        async with script.client() as c:
            n = await c.download_blob(SHA, sink, offset=offset, length=length)
        want = DATA[offset:] if length is None else DATA[offset:offset + length]
        assert sink.getvalue() == want and n == len(want)
        header = script.requests[0].headers.get("range")
        if offset == 0 and length is None:
            assert header is None
        else:
            end = "" if length is None else str(offset + length - 1)
            assert header == f"bytes={offset}-{end}"

    run(main)


def test_broken_download_resumes_where_it_stopped() -> None:
    script = Script(range_server(DATA, break_first_at=70000))

    async def main() -> None:
        sink = io.BytesIO()
        async with script.client() as c:
            n = await c.download_blob(SHA, sink, offset=10)
        assert hashlib.sha256(sink.getvalue()).digest() == hashlib.sha256(DATA[10:]).digest()
        assert n == len(DATA) - 10
        assert [r.headers.get("range") for r in script.requests] == ["bytes=10-", "bytes=70010-"]
        assert c.stats["retries"] == 1

    run(main)


def test_broken_download_without_retries_fails() -> None:
    script = Script(range_server(DATA, break_first_at=100))

    async def main() -> None:
        async with script.client(retries=0) as c:
            with pytest.raises(Unavailable):
                await c.download_blob(SHA, io.BytesIO())

    run(main)


def test_upload_streams_a_file_with_its_length(tmp_path) -> None:
    data = b"x" * (3 * 1024 * 1024 + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    script = Script(httpx.Response(503), httpx.Response(201, json={"sha256": sha, "size": len(data)}))

    async def main() -> None:
        async with script.client() as c:
            assert await c.upload_blob(sha, path) == {"sha256": sha, "size": len(data)}
        assert [r.method for r in script.requests] == ["PUT", "PUT"]
        assert script.bodies == [data, data]  # the retry streamed the file again
        assert script.requests[1].headers["content-length"] == str(len(data))
        assert c.stats["bytes_out"] == 2 * len(data)

    run(main)


def test_events_long_poll_outlasts_its_wait() -> None:
    script = Script(httpx.Response(200, json={"events": [], "cursor": 7}))

    async def main() -> None:
        async with script.client(timeout=4.0) as c:
            assert await c.events(after=7, timeout=25) == {"events": [], "cursor": 7}
            await c.health()
        waits = [r.extensions["timeout"] for r in script.requests]
        assert waits[0]["read"] > 25 and waits[0]["connect"] == 4.0
        assert waits[1]["read"] == 4.0
        assert script.requests[0].url.params["timeout"] == "25"

    run(main)


def test_stats_count_requests_and_bytes() -> None:
    payload = b'{"products": [{"pri": "spies-lgt"}], "missing": []}'
    script = Script(httpx.Response(200, content=payload, headers={"content-type": "application/json"}))

    async def main() -> None:
        async with script.client() as c:
            await c.list_products()
            await c.missing_blobs([SHA, SHA])
        assert c.stats["requests"] == 2 and c.stats["retries"] == 0 and c.stats["errors"] == 0
        assert c.stats["bytes_in"] == 2 * len(payload)
        assert c.stats["bytes_out"] == len(script.bodies[1]) > 0
        assert json.loads(script.bodies[1]) == {"sha256": [SHA]}  # duplicates asked once
        assert c.stats["latency"] >= 0

    run(main)


def test_a_given_transport_is_used_as_is() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"status": "ok"})

    async def main() -> None:
        async with PVCClient("https://pvc.example.org:9000/", transport=httpx.MockTransport(handler)) as c:
            await c.health()

    run(main)
    assert seen == ["https://pvc.example.org:9000/api/v1/health"]


def test_workspace_outputs_and_origins_in_requests() -> None:
    script = Script(httpx.Response(200, json={"ref": "spies-lgt@1", "pri": "spies-lgt", "workspaces": []}))
    record = {"name": "lgt", "revision": 4, "changed_at": "2020-01-01T00:00:00.000000Z", "outputs": ["spies-lgt"]}

    async def main() -> None:
        async with script.client() as c:
            await c.put_workspace("lgt", {"roots": [], "outputs": ["spies-lgt", "spies:1-comp"]})
            await c.put_workspace("lgt", {"roots": []})
            await c.publish("spies-lgt", [], workspace={"name": "lgt", "revision": 3})
            await c.publish("spies-lgt", [], workspace=record)  # a fetched Workspace: its name and revision
            await c.publish("spies-lgt", [])
            await c.declared_outputs("spies:100:10-lgt:walter")
            await c.declared_outputs("spies-lgt", as_of="2019-01-24T19:00:00+01:00")
        assert script.json_body(0)["outputs"] == ["spies-lgt", "spies:1-comp"]
        assert "outputs" not in script.json_body(1)  # not given: not sent (an older service refuses the key)
        assert script.json_body(2)["workspace"] == {"name": "lgt", "revision": 3}
        assert script.json_body(3)["workspace"] == {"name": "lgt", "revision": 4}
        assert "workspace" not in script.json_body(4)
        assert script.requests[5].method == "GET"
        assert script.requests[5].url.raw_path == b"/api/v1/outputs/spies:100:10-lgt:walter"
        assert script.requests[6].url.params["as_of"] == "2019-01-24T18:00:00.000000Z"

    run(main)


def test_a_bad_origin_is_refused_before_any_upload(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a")
    script = Script()

    async def main() -> None:
        async with script.client() as c:
            with pytest.raises(InvalidInput, match="revision"):
                await c.publish_directory("spies-lgt", tmp_path, workspace={"name": "lgt", "revision": -1})
        assert script.requests == []  # not even the question which blobs the store lacks

    run(main)
