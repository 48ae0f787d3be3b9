"""Counters of a running mount, reported in ``.prodfs/stats.json`` and ``prodfs status``."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    started: float = field(default_factory=time.time)
    lookups: int = 0
    negative_lookups: int = 0
    getattrs: int = 0
    readdirs: int = 0
    opens: int = 0
    reads: int = 0
    bytes_read: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    blobs_hashed: int = 0  # cached payloads hashed again before use (not trusted from the ledger)
    manifests_fetched: int = 0
    manifest_requests: int = 0  # requests that fetched them (one batch answers many)
    resolutions: int = 0
    invalidations: int = 0
    events: int = 0
    errors: int = 0
    degraded_since: float | None = None
    degraded_reason: str | None = None
    last_error: str | None = None

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message

    def to_json(self, **extra: object) -> dict:
        d = asdict(self)
        d["pid"] = os.getpid()
        d["uptime"] = round(time.time() - self.started, 3)
        total = self.cache_hits + self.cache_misses
        d["cache_hit_ratio"] = round(self.cache_hits / total, 4) if total else None
        d["degraded"] = self.degraded_since is not None
        d.update(extra)
        return d


_COUNTERS = ("lookups", "negative_lookups", "getattrs", "readdirs", "opens", "reads", "bytes_read",
             "cache_hits", "cache_misses", "blobs_fetched", "bytes_fetched", "blobs_hashed",
             "manifests_fetched", "manifest_requests",
             "resolutions", "invalidations", "events", "errors", "pvc_requests")
_GAUGES = ("uptime", "products", "resolved", "conflicts", "inodes", "cache_hit_ratio", "pvc_latency_avg_ms")


def prometheus_text(status: dict) -> str:
    """The status of one mount in Prometheus' text format (for node_exporter's textfile collector)."""
    label = '{mountpoint="%s"}' % str(status.get("mountpoint", "")).replace("\\", "\\\\").replace('"', '\\"')
    lines = []
    for key in _COUNTERS:
        if key in status:
            lines += [f"# TYPE prodfs_{key}_total counter", f"prodfs_{key}_total{label} {status[key] or 0}"]
    for key in _GAUGES:
        if status.get(key) is not None:
            lines += [f"# TYPE prodfs_{key} gauge", f"prodfs_{key}{label} {status[key]}"]
    cache = status.get("cache") or {}
    lines += ["# TYPE prodfs_cache_bytes gauge", f"prodfs_cache_bytes{label} {cache.get('bytes', 0)}",
              "# TYPE prodfs_degraded gauge", f"prodfs_degraded{label} {int(bool(status.get('degraded')))}"]
    return "\n".join(lines) + "\n"
