"""The service as a real subprocess over loopback: start, publish, read back, restart."""

from __future__ import annotations

import hashlib
import os
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from pvc_client import PACK_MEDIA_TYPE, frame_header
from pvc_service.server import _listen
from tests.support.service import Service, ServiceFailed, running_service

PRI = "spies:100:10-lgt:walter"


def _publish_one(api: str, body: bytes, headers: dict[str, str] | None = None) -> dict:
    sha = hashlib.sha256(body).hexdigest()
    with httpx.Client(base_url=api, headers=headers, timeout=30) as http:
        r = http.put(f"/blobs/{sha}", content=body)
        assert r.status_code == 201, r.text
        r = http.post(f"/products/{PRI}/versions", json={
            "manifest": [{"path": "scene.usd", "type": "file", "size": len(body), "sha256": sha}],
            "labels": ["published"], "message": "first light"})
        assert r.status_code == 201, r.text
        return r.json()


def test_publish_read_back_and_restart(pvc_service: Service, pvc_url: str) -> None:
    assert pvc_url == pvc_service.url and pvc_service.api == pvc_url + "/api/v1"
    version = _publish_one(pvc_service.api, b"#usda 1.0\n")
    assert version["ref"] == f"{PRI}@1"
    with httpx.Client(base_url=pvc_service.api) as http:
        got = http.get(f"/products/{PRI}/versions/published").json()
        assert got["manifest"] == version["manifest"]
        blob = http.get(f"/blobs/{version['manifest'][0]['sha256']}")
        assert blob.content == b"#usda 1.0\n"
        assert http.get("/health").json()["database"] == "sqlite"

    # a graceful stop ends the process by the SIGTERM that asked for it
    assert pvc_service.stop() in (0, -15)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{pvc_service.api}/health")
    pvc_service.start()
    assert pvc_service.url == pvc_url  # same port: clients keep their URL
    assert httpx.get(f"{pvc_service.api}/products/{PRI}").json()["latest"] == 1
    assert (pvc_service.data_dir / "pvc.sqlite3").exists()


def test_kept_alive_requests_do_not_wait_for_delayed_acks(pvc_service: Service) -> None:
    # A listener without TCP_NODELAY makes every response after the first on a
    # kept-alive connection wait for the client's delayed ACK: about 40 ms each,
    # whatever the endpoint, so a cold mount paid 40 ms a blob.
    with httpx.Client(base_url=pvc_service.api, timeout=30) as http:
        http.get("/health")
        times = []
        for _ in range(50):
            start = time.perf_counter()
            assert http.get("/health").status_code == 200
            times.append(time.perf_counter() - start)
    # the stall is a floor of ~40 ms per request; a loaded machine is far below it at the median
    assert statistics.median(times) < 0.020, f"median {statistics.median(times) * 1000:.1f} ms"


def test_a_head_answered_with_an_error_keeps_its_connection(pvc_service: Service) -> None:
    # HEAD is served as a GET without the body: the server must still know it was a HEAD,
    # or it waits for the error body's Content-Length and drops the kept-alive connection
    with httpx.Client(base_url=pvc_service.api, timeout=30) as http:
        for _ in range(3):
            bad = http.head("/blobs/not-a-hash")
            assert bad.status_code == 400 and int(bad.headers["content-length"]) > 0 and bad.content == b""
            assert http.head(f"/blobs/{'0' * 64}").status_code == 404
            assert http.get("/health").status_code == 200


def test_accepted_connections_have_nodelay() -> None:
    listener = _listen("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.proto == socket.IPPROTO_TCP  # what asyncio checks before setting it
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_tokens_over_loopback(tmp_path: Path) -> None:
    # with tokens, listening beyond loopback is allowed
    tokens = {"r-token-123": ("read", "viewer"), "p-token-123": ("publish", "lighter")}
    with running_service(tmp_path / "data", tokens=tokens, host="0.0.0.0") as svc:
        assert f"pvc: serving on {svc.url}" in svc.log()
        api = f"http://127.0.0.1:{svc.port}/api/v1"
        assert httpx.get(f"{api}/products").status_code == 401
        version = _publish_one(api, b"x", {"Authorization": "Bearer p-token-123"})
        assert version["author"] == "lighter"
        r = httpx.get(f"{api}/products", headers={"Authorization": "Bearer r-token-123"})
        assert [p["pri"] for p in r.json()["products"]] == [PRI]


def test_start_failure_reports_stderr(tmp_path: Path) -> None:
    with pytest.raises(ServiceFailed, match="refusing to listen on 0.0.0.0"):
        with running_service(tmp_path / "data", host="0.0.0.0"):
            pass


@pytest.mark.postgres
def test_postgresql_over_loopback(tmp_path: Path, pg_url: str) -> None:
    with running_service(tmp_path / "data", db_url=pg_url) as svc:
        _publish_one(svc.api, b"on postgres")
        with httpx.Client(base_url=svc.api) as http:
            assert http.get("/health").json()["database"] == "postgresql"
            # a long-poll is answered at once when events are already there
            feed = http.get("/events", params={"timeout": 30}).json()
            assert [e["kind"] for e in feed["events"]] == ["publish", "label"]
            # a pack of blobs recorded in one transaction, twice (the second finds them all)
            blobs = [os.urandom(1000 + i) for i in range(50)]
            pack = b"".join(frame_header(hashlib.sha256(b).hexdigest(), len(b)) + b for b in blobs)
            for created in (50, 0):
                r = http.post("/blobs/batch/put", content=pack, headers={"Content-Type": PACK_MEDIA_TYPE})
                assert r.status_code == 200 and r.json()["created"] == created, r.text
            missing = http.post("/blobs/missing", json={"sha256": [hashlib.sha256(b).hexdigest() for b in blobs]})
            assert missing.json()["missing"] == []
        svc.stop()
        svc.start()
        assert httpx.get(f"{svc.api}/products/{PRI}/versions/published").json()["number"] == 1
    # metadata went to PostgreSQL, not to a SQLite file
    assert not (tmp_path / "data" / "pvc.sqlite3").exists()



def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_workers_share_the_socket_and_stop_together(tmp_path: Path) -> None:
    tokens = {"tok-publish-1": ("publish", "lighting")}
    with running_service(tmp_path / "data", tokens=tokens, extra_args=["--workers", "2"]) as service:
        assert service.proc is not None
        workers = _children(service.proc.pid)
        assert len(workers) == 2
        assert service.log().count("pvc: serving on") == 1 and "(2 workers)" in service.log()
        headers = {"Authorization": "Bearer tok-publish-1"}
        with httpx.Client(base_url=service.api, headers=headers, timeout=30) as http:
            start = http.get("/events").json()["cursor"]
            # a long-poll waiting on one worker hears of a publish that another may
            # have taken, at its next read of the database (within a second)
            with httpx.Client(base_url=service.api, headers=headers, timeout=30) as waiter:
                got: list[dict] = []
                poll = threading.Thread(target=lambda: got.append(
                    waiter.get("/events", params={"after": start, "timeout": 20}).json()))
                poll.start()
                time.sleep(0.3)
                posted = time.monotonic()
                _publish_one(service.api, b"from a worker", headers)
                poll.join(25)
                assert got and got[0]["events"][0]["pri"] == PRI
                assert time.monotonic() - posted < 5
            # every connection is answered, by whichever worker took it
            for _ in range(20):
                with httpx.Client(base_url=service.api, headers=headers, timeout=30) as fresh:
                    assert fresh.get(f"/products/{PRI}").json()["latest"] == 1
        assert service.stop() in (0, -15)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # stopped and reaped

        # a worker that dies stops the service (its supervisor restarts it whole)
        service.start()
        workers = _children(service.proc.pid)
        os.kill(workers[0], 9)
        assert service.proc.wait(20) == 1
        assert "stopping the others" in service.log()
        assert not Path(f"/proc/{workers[1]}").exists()
