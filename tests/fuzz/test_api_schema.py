"""The PVC API fuzzed from its own OpenAPI document (schemathesis) against a real service.

Every generated request (valid and invalid, per the document) must get an
answer below 500, and afterwards the store must hold nothing malformed:
every blob hashes to its name, every version's manifest passes the rules,
the graph and the feed still answer, and nothing was written outside the
data directory's own layout.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from pvc_client import PACK_MEDIA_TYPE, validate_manifest
from tests.support.service import Service, running_service

EXAMPLES = int(os.environ.get("PRODFS_FUZZ_EXAMPLES", "5"))

# a pack (POST /blobs/batch/put) is a binary body: sent as generated, which the service must refuse cleanly
schemathesis.serializer.alias(PACK_MEDIA_TYPE, "application/octet-stream")


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("fuzz") / "data") as service:
        # something to find: a product, a label, a workspace
        with httpx.Client(base_url=service.api) as api:
            data = b"seed\n"
            sha = hashlib.sha256(data).hexdigest()
            assert api.put(f"/blobs/{sha}", content=data).status_code in (200, 201)
            r = api.post("/products/spies:100:10-lgt:walter/versions", json={
                "manifest": [{"path": "a.txt", "type": "file", "mode": 0o644, "size": len(data), "sha256": sha}],
                "labels": ["published"]})
            assert r.status_code == 201, r.text
            assert api.put("/workspaces/lgt", json={"roots": ["spies:100:10-lgt:walter"]}).status_code == 200
        yield service


@pytest.mark.parametrize(("mode", "examples"), [
    ("positive", EXAMPLES), pytest.param("negative", EXAMPLES, marks=pytest.mark.slow),
    pytest.param("positive", 100, marks=pytest.mark.slow), pytest.param("negative", 100, marks=pytest.mark.slow)])
def test_no_server_errors(fuzz_service: Service, mode: str, examples: int) -> None:
    # schemathesis' own pytest plugin predates this pytest: drive its strategies with hypothesis
    schema = schemathesis.openapi.from_url(fuzz_service.api + "/openapi.json")
    generation = schemathesis.GenerationMode(mode)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation))
        def run(case: schemathesis.Case) -> None:
            # the long-poll would hold each generated feed request for up to a minute
            if case.path == "/api/v1/events" and isinstance(case.query, dict):
                case.query["timeout"] = 0
            response = case.call(timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} -> "
                                f"{response.status_code} {response.text[:300]}")

        try:
            run()
        except Unsatisfiable:
            assert mode == "negative"  # nothing invalid can be said to it (GET /health)
    assert not failures, "\n".join(failures[:20])


def test_no_garbage_was_stored(fuzz_service: Service) -> None:
    data = fuzz_service.data_dir
    with httpx.Client(base_url=fuzz_service.api, timeout=60) as api:
        assert api.get("/health").json()["status"] == "ok"
        index = api.get("/index")
        assert index.status_code == 200
        for pri, product in index.json()["products"].items():
            for v in product["versions"]:
                r = api.get(f"/products/{pri}/versions/{v['number']}")
                assert r.status_code == 200, r.text
                validate_manifest(r.json()["manifest"])
        assert api.get("/events", params={"limit": 10000}).status_code == 200
    for path in data.rglob("*"):
        rel = path.relative_to(data)
        if path.is_file():
            if rel.parts[0] == "blobs" and rel.parts[1] != "tmp":
                assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, rel
            else:
                assert rel.parts[0] == "blobs" or rel.name.startswith("pvc.sqlite3"), rel
    # nothing beside the data directory either
    assert sorted(p.name for p in data.parent.iterdir()) == [data.name]


def test_paths_that_try_to_escape(fuzz_service: Service) -> None:
    """Encoded traversal in every kind of path parameter: refused, never a file outside."""
    data: Path = fuzz_service.data_dir
    probes = ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc", "..", "%2e%2e", "....//....//etc",
              "%00", "a%00b", "..%5c..%5cetc", "%252e%252e%252f"]
    with httpx.Client(base_url=fuzz_service.url, timeout=30) as http:
        for probe in probes:
            for method, path in (("GET", f"/api/v1/blobs/{probe}"), ("PUT", f"/api/v1/blobs/{probe}"),
                                 ("HEAD", f"/api/v1/blobs/{probe}"), ("GET", f"/api/v1/products/{probe}"),
                                 ("GET", f"/api/v1/workspaces/{probe}"), ("PUT", f"/api/v1/workspaces/{probe}"),
                                 ("GET", f"/api/v1/snapshots/{probe}"),
                                 ("GET", f"/api/v1/products/spies-x/labels/{probe}/history")):
                kwargs = {"content": b"x"} if method == "PUT" and "blobs" in path else \
                    {"json": {"roots": []}} if method == "PUT" else {}
                r = http.request(method, path, **kwargs)
                assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
    for path in data.rglob("*"):
        assert path.resolve().is_relative_to(data.resolve())
    assert sorted(p.name for p in data.parent.iterdir()) == [data.name]
