"""Service metrics in the Prometheus text exposition format (version 0.0.4).

A handful of counters and one histogram do not justify a dependency; this is
the whole of it. Updates happen on the event loop or under a lock.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

__all__ = ["Metrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(**pairs: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        # route -> (bucket counts, sum, count)
        self.durations: dict[str, tuple[list[int], float, int]] = {}
        self.blob_bytes_in = 0
        self.blob_bytes_out = 0
        self.publishes = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            buckets, total, count = self.durations.get(route, ([0] * len(_BUCKETS), 0.0, 0))
            i = bisect.bisect_left(_BUCKETS, seconds)
            if i < len(buckets):
                buckets[i] += 1
            self.durations[route] = (buckets, total + seconds, count + 1)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def render(self) -> str:
        with self._lock:
            out = [
                "# HELP pvc_http_requests_total HTTP requests by method, route and status.",
                "# TYPE pvc_http_requests_total counter",
            ]
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(f"pvc_http_requests_total{_labels(method=method, route=route, status=str(status))} {n}")
            out += [
                "# HELP pvc_http_request_duration_seconds Time to answer a request, by route.",
                "# TYPE pvc_http_request_duration_seconds histogram",
            ]
            for route, (buckets, total, count) in sorted(self.durations.items()):
                running = 0
                for bound, n in zip(_BUCKETS, buckets):
                    running += n
                    out.append(f"pvc_http_request_duration_seconds_bucket{_labels(route=route, le=str(bound))} {running}")
                out.append(f"pvc_http_request_duration_seconds_bucket{_labels(route=route, le='+Inf')} {count}")
                out.append(f"pvc_http_request_duration_seconds_sum{_labels(route=route)} {total:.6f}")
                out.append(f"pvc_http_request_duration_seconds_count{_labels(route=route)} {count}")
            for name, help_text, value in (
                ("pvc_blob_bytes_in_total", "Blob bytes received by uploads.", self.blob_bytes_in),
                ("pvc_blob_bytes_out_total", "Blob bytes sent by downloads.", self.blob_bytes_out),
                ("pvc_publishes_total", "Versions published.", self.publishes),
            ):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(out) + "\n"
