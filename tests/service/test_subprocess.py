"""The service as a real subprocess over loopback: start, publish, read back, restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

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


def test_publish_and_read_back_over_loopback(pvc_service: Service) -> None:
    version = _publish_one(pvc_service.api, b"#usda 1.0\n")
    assert version["ref"] == f"{PRI}@1"
    with httpx.Client(base_url=pvc_service.api) as http:
        got = http.get(f"/products/{PRI}/versions/published").json()
        assert got["manifest"] == version["manifest"]
        blob = http.get(f"/blobs/{version['manifest'][0]['sha256']}")
        assert blob.content == b"#usda 1.0\n"
        assert http.get("/health").json()["database"] == "sqlite"


def test_restart_keeps_data_and_port(tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as svc:
        _publish_one(svc.api, b"payload")
        url = svc.url
        # a graceful stop ends the process by the SIGTERM that asked for it
        assert svc.stop() in (0, -15)
        svc.start()
        assert svc.url == url
        r = httpx.get(f"{svc.api}/products/{PRI}")
        assert r.json()["latest"] == 1
    assert (tmp_path / "data" / "pvc.sqlite3").exists()


def test_tokens_over_loopback(tmp_path: Path) -> None:
    tokens = {"r-token-123": ("read", "viewer"), "p-token-123": ("publish", "lighter")}
    with running_service(tmp_path / "data", tokens=tokens) as svc:
        assert httpx.get(f"{svc.api}/products").status_code == 401
        version = _publish_one(svc.api, b"x", {"Authorization": "Bearer p-token-123"})
        assert version["author"] == "lighter"
        r = httpx.get(f"{svc.api}/products", headers={"Authorization": "Bearer r-token-123"})
        assert [p["pri"] for p in r.json()["products"]] == [PRI]


def test_start_failure_reports_stderr(tmp_path: Path) -> None:
    with pytest.raises(ServiceFailed, match="refusing to listen on 0.0.0.0"):
        with running_service(tmp_path / "data", host="0.0.0.0"):
            pass
