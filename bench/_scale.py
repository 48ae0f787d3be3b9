"""``python -m bench scale``: what a mount costs on a big store (issue #17).

One store (built once by ``gen_history`` and ``pvc import``, then reused,
see ``_scale_store``) served by ``pvc serve`` on loopback, and on it:

- a live mount with an empty cache: time until usable, and its daemon's RSS;
- first lookups of versionless names never looked up, then the same again;
- a publish through the API, until a live mount that uses the product shows it;
- a workspace whose closure is about 10,000 products: time to mount it, RSS;
- 500 concurrent requests of the kind a mount makes on a first lookup.

Every step is bounded in time, and one that fails or runs out of time is
recorded with why; the run goes on with the next one. A step that blocks in a
system call on a mount (a daemon that stopped answering) is ended by killing
that mount's daemon, which makes the kernel fail the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ._scale_store import GeneratorArgs, Store, database_version, ensure_store, generator_sha256, postgres
from ._system import BenchError, machine

__all__ = ["ScaleOptions", "run_scale", "plan", "percentile"]

Log = Callable[[str], None]
PRODFS = [sys.executable, "-m", "mount_tools.cli"]
API = "/api/v1"
VERSION_XATTR = "user.prodfs.version"
WORKSPACE = "scale-closure"
MiB = 1 << 20


@dataclass(slots=True)
class ScaleOptions:
    db: str
    args: GeneratorArgs
    store_dir: Path
    lookups: int = 500
    publish_reps: int = 5
    closure_products: int = 10_000
    concurrency: int = 500
    rounds: int = 3
    client_procs: int = 1
    mount_timeout: float = 120.0
    build_timeout: float = 7200.0
    workdir: Path | None = None
    keep: bool = False


class StepFailed(Exception):
    """A step that could not be measured: its message is the "why" of its row."""


# -- what to look at ----------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """The names each step uses, drawn from the generator's layout (no request needed to know them)."""

    products: int
    lookups: list[str]
    publish: list[str]
    requests: list[str]
    roots: list[str]
    expected_closure: int
    notes: list[str] = field(default_factory=list)


def plan(args: GeneratorArgs, lookups: int, publish_reps: int, requests: int, closure_products: int) -> Plan:
    """Samples across the whole store, by a fixed seed: the same store is always probed by the same names.

    The layout is the generator's own (``gen_history.layout`` with the
    history's seed), so it names exactly the store's products.
    """
    from .gen_history import layout

    rows = layout(args.products, random.Random(args.seed))
    pris = [pri for pri, _ in rows]
    rng = random.Random(f"bench-scale:{args.seed}")
    notes = []
    want = lookups + publish_reps
    if want > len(pris):
        lookups = max(0, len(pris) - publish_reps)
        notes.append(f"a store of {len(pris)} products: {lookups} lookups instead of the {want - publish_reps} asked")
    picked = rng.sample(pris, lookups + publish_reps)
    # the service requests may repeat names on a small store (they need not be first lookups)
    reqs = rng.sample(pris, requests) if requests <= len(pris) else rng.choices(pris, k=requests)
    roots, size = _closure_roots(rows, closure_products)
    return Plan(len(pris), picked[:lookups], picked[lookups:], reqs, roots, size, notes)


def _closure_roots(rows: list[tuple[str, list[str]]], target: int) -> tuple[list[str], int]:
    """Shot comps, in the layout's order (the first show first), until their closure reaches ``target``.

    Every version of a generated product has the same inputs, so the closure
    over any version (what /closure answers) is the closure of these inputs.
    """
    inputs = dict(rows)
    seen: set[str] = set()
    roots: list[str] = []
    for pri, _ in rows:
        if len(seen) >= target:
            break
        if not pri.endswith("-comp"):
            continue
        roots.append(pri)
        stack = [pri]
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(inputs[p])
    return roots, len(seen)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest sample with at least q% of the samples at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _latency_summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3),
            "max_ms": round(max(ms), 3), "mean_ms": round(statistics.fmean(ms), 3)}


# -- bounded steps ------------------------------------------------------------------------------


def bounded(fn: Callable[[], Any], seconds: float, on_timeout: Callable[[], None] | None = None) -> Any:
    """``fn()`` in a thread, waited for ``seconds``; past that ``on_timeout()`` (which must unblock it) runs."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        if on_timeout is not None:
            on_timeout()
        t.join(15)
        raise StepFailed(f"not done within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _proc_status(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far: a mount that took its time computing, or waiting."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def _daemon_pids(mnt: Path) -> list[int]:
    """The daemons serving (or starting on) ``mnt``.

    ``prodfs mount`` detaches them, so they are found by their arguments.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prodfs.mount.daemon" in argv and os.fsencode(str(mnt)) in argv:
            found.append(int(entry))
    return found


# -- mounts -------------------------------------------------------------------------------------


class Mount:
    """One ``prodfs mount`` (a detached daemon), timed from the command's start until usable."""

    def __init__(self, mnt: Path, cache: Path, log: Path, url: str, extra: list[str], cap: float) -> None:
        self.mnt, self.cache, self.log, self.url, self.extra, self.cap = mnt, cache, log, url, extra, cap
        self.pid: int | None = None

    def start(self) -> dict:
        self.mnt.mkdir(parents=True, exist_ok=True)
        cmd = [*PRODFS, "mount", str(self.mnt), "--pvc", self.url, "--cache-dir", str(self.cache),
               "--log-file", str(self.log), "--log-level", "warning", *self.extra]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Waiting on the command's pipes returns the moment it exits; every half second in
        # between, the starting daemon's memory is read, so that a mount that fails (prodfs
        # mount gives up after 120 s and kills its daemon) still says how big it had grown.
        daemon, grown = None, ""
        while True:
            try:
                _, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() - t0 > self.cap:
                proc.kill()
                proc.wait()
                memory = self._abort() or grown
                raise StepFailed(f"not ready within {self.cap:g} s{memory}") from None
            if daemon is None:
                daemon = next(iter(_daemon_pids(self.mnt)), None)
            rss = _proc_status(daemon, "VmRSS") if daemon else None
            if rss:
                grown = f" (the daemon had {rss / MiB:.0f} MiB resident after {time.monotonic() - t0:.0f} s)"
        returned = time.monotonic() - t0
        if proc.returncode != 0:
            self._abort()
            raise StepFailed(f"prodfs mount exited {proc.returncode} after {returned:.0f} s: "
                             f"{err.decode(errors='replace').strip()[-300:]}{grown}{self._log_tail()}")
        stats = self._wait_usable(t0)
        seconds = time.monotonic() - t0
        self.pid = int(stats["pid"])
        return {"seconds": round(seconds, 3), "command_seconds": round(returned, 3), "pid": self.pid,
                "rss_bytes": _proc_status(self.pid, "VmRSS"), "peak_rss_bytes": _proc_status(self.pid, "VmHWM"),
                "products": stats.get("products"), "zero_open": stats.get("zero_open"),
                "daemon_cpu_seconds": _cpu_seconds(self.pid)}

    def _wait_usable(self, t0: float) -> dict:
        """Mounted, and ``.prodfs/stats.json`` read whole (what a user's first access needs)."""
        stats_path = self.mnt / ".prodfs" / "stats.json"
        last: Exception | None = None
        while time.monotonic() - t0 < self.cap:
            if os.path.ismount(self.mnt):
                try:
                    return json.loads(bounded(stats_path.read_bytes, max(1.0, self.cap - (time.monotonic() - t0)),
                                              self._kill_daemons))
                except (OSError, ValueError) as exc:
                    last = exc
            time.sleep(0.005)
        self._abort()
        raise StepFailed(f"mounted but .prodfs/stats.json not readable within {self.cap:.0f} s ({last!r})")

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f"; daemon log: {lines[-1][-300:]}" if lines else ""

    def _kill_daemons(self) -> str:
        """SIGKILL the daemons of this mountpoint (the kernel then fails whatever waits on it)."""
        memory = ""
        for pid in _daemon_pids(self.mnt):
            rss, peak = _proc_status(pid, "VmRSS"), _proc_status(pid, "VmHWM")
            if rss:
                memory = f" (the daemon had {rss / MiB:.0f} MiB resident, {(peak or 0) / MiB:.0f} MiB at most)"
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return memory

    def _abort(self) -> str:
        memory = self._kill_daemons()
        self._force_unmount()
        return memory

    def _force_unmount(self) -> None:
        if os.path.ismount(self.mnt) or _is_dead(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True, timeout=30)

    def stop(self) -> None:
        if not (os.path.ismount(self.mnt) or _is_dead(self.mnt)):
            self._kill_daemons()  # one still starting
            return
        try:
            res = subprocess.run([*PRODFS, "umount", str(self.mnt)], capture_output=True, timeout=60)
            ok = res.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if not ok:
            self._abort()


def _is_dead(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == 107  # ENOTCONN: a mount whose daemon is gone
    return False


# -- the steps ----------------------------------------------------------------------------------


def step_live_mount(mount: Mount) -> dict:
    return mount.start()


def step_lookups(mount: Mount, names: list[str]) -> dict:
    """``os.stat`` of each versionless name, first (never looked up on this mount), then again."""

    def run() -> dict:
        out: dict = {}
        for phase in ("first", "again"):
            times, errors = [], Counter()
            for pri in names:
                t = time.perf_counter()
                try:
                    os.stat(mount.mnt / pri)
                except OSError as exc:
                    errors[exc.strerror or repr(exc)] += 1
                    continue
                times.append(time.perf_counter() - t)
            out[phase] = {**(_latency_summary(times) if times else {"n": 0}), "errors": dict(errors),
                          "samples_ms": [round(t * 1000, 3) for t in times]}
        return out

    if not names:
        raise StepFailed("no names to look up")
    return bounded(run, 60 + 0.5 * len(names), mount._kill_daemons)


def step_publish(mount: Mount, http: Any, names: list[str], timeout: float = 30.0) -> dict:
    """A product in use in the live mount gets a new version through the API: until the mount shows it."""
    reps = []
    for pri in names:
        path = mount.mnt / pri
        rep: dict = {"pri": pri}
        try:
            def use() -> int:
                os.listdir(path)
                return int(os.getxattr(path, VERSION_XATTR))

            rep["before"] = bounded(use, 30, mount._kill_daemons)
            t0 = time.perf_counter()
            resp = http.post(f"{API}/products/{quote(pri, safe=':@')}/versions",
                             json={"manifest": [], "message": "bench scale: publish visibility", "author": "bench"})
            rep["publish_seconds"] = round(time.perf_counter() - t0, 4)
            if resp.status_code != 201:
                raise StepFailed(f"publish answered {resp.status_code}: {resp.text[:200]}")
            number = resp.json()["number"]
            rep["after"] = number

            def poll() -> float | None:
                while time.perf_counter() - t0 < timeout:
                    with contextlib.suppress(OSError, ValueError):
                        if int(os.getxattr(path, VERSION_XATTR)) == number:
                            return time.perf_counter() - t0
                    time.sleep(0.01)
                return None

            seen = bounded(poll, timeout + 15, mount._kill_daemons)
            if seen is None:
                rep["error"] = f"version {number} not shown within {timeout:.0f} s"
            else:
                rep["visible_seconds"] = round(seen, 4)
        except Exception as exc:  # noqa: BLE001 - the next repetition may still work
            rep["error"] = str(exc)[:300] if isinstance(exc, StepFailed) else repr(exc)[:300]
        reps.append(rep)
        time.sleep(0.2)  # let the mount's feed settle before the next one
    seen = [r["visible_seconds"] for r in reps if "visible_seconds" in r]
    out: dict = {"reps": reps, "visible": len(seen)}
    if seen:
        out.update(median_seconds=round(statistics.median(seen), 4), worst_seconds=round(max(seen), 4))
    return out


def step_workspace(http: Any, plan_: Plan, mount: Mount) -> dict:
    """A workspace whose closure is about the size asked, then ``prodfs mount --workspace``."""
    if not plan_.roots:
        raise StepFailed("the store has no shot comps to root a workspace at")
    resp = http.put(f"{API}/workspaces/{WORKSPACE}", json={"roots": plan_.roots, "author": "bench"})
    if resp.status_code != 200:
        raise StepFailed(f"PUT /workspaces/{WORKSPACE} answered {resp.status_code}: {resp.text[:200]}")
    t0 = time.perf_counter()
    resp = http.post(f"{API}/closure", json={"roots": plan_.roots})
    closure_seconds = time.perf_counter() - t0
    if resp.status_code != 200:
        raise StepFailed(f"POST /closure of the roots answered {resp.status_code}: {resp.text[:200]}")
    size = len(resp.json()["products"])
    out = {"workspace": WORKSPACE, "revision": http.get(f"{API}/workspaces/{WORKSPACE}").json().get("revision"),
           "roots": len(plan_.roots), "closure_products": size, "expected_closure": plan_.expected_closure,
           "closure_request_seconds": round(closure_seconds, 3)}
    try:
        out.update(mount.start())
        # usable means its names answer: one root looked up
        t = time.perf_counter()
        bounded(lambda: os.stat(mount.mnt / plan_.roots[0]), 30, mount._kill_daemons)
        out["first_root_lookup_ms"] = round((time.perf_counter() - t) * 1000, 3)
    except StepFailed as exc:
        out["error"] = str(exc)
    return out


def _burst_worker(url: str, kind: str, names: list[str], rounds: int, barrier: Any, results: Any) -> None:
    """One client process: ``rounds + 1`` bursts of ``len(names)`` requests at once (the first opens the connections).

    Each request has a client of its own with one connection, as each mount
    has: one httpx pool of 500 connections costs the client more than the
    service (httpcore scans every connection of its pool for every request
    and response: the client's CPU was the whole wall time, 10 ms a request).
    """
    import httpx

    async def one(client: httpx.AsyncClient, pri: str) -> tuple[float, int | str]:
        t = time.perf_counter()
        try:
            if kind == "closure":
                r = await client.post(f"{API}/closure", json={"roots": [pri], "depth": 0, "missing": "omit"})
            else:
                r = await client.get(f"{API}/products/{quote(pri, safe=':@')}")
            status: int | str = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        return time.perf_counter() - t, status

    async def main() -> list[dict]:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        out = []
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, limits=limits, timeout=60))
                       for _ in names]
            for _ in range(rounds + 1):
                barrier.wait(timeout=180)
                cpu, wall = time.process_time(), time.perf_counter()
                done = await asyncio.gather(*(one(c, pri) for c, pri in zip(clients, names)))
                out.append({"latencies": [d for d, _ in done], "statuses": dict(Counter(str(s) for _, s in done)),
                            "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu})
        return out

    try:
        results.put(asyncio.run(main()))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        results.put({"error": repr(exc)[:300]})


def step_burst(url: str, kind: str, names: list[str], rounds: int, procs: int, timeout: float = 600) -> dict:
    """``len(names)`` concurrent requests from ``procs`` client processes, started on a barrier, ``rounds`` times."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    shares = [names[i::procs] for i in range(procs)]
    workers = [ctx.Process(target=_burst_worker, args=(url, kind, share, rounds, barrier, results), daemon=True)
               for share in shares]
    for w in workers:
        w.start()
    got = []
    deadline = time.monotonic() + timeout
    try:
        for _ in workers:
            got.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
    except Exception:  # noqa: BLE001 - queue.Empty: out of time
        raise StepFailed(f"the clients did not finish within {timeout:.0f} s") from None
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.kill()
                w.join()
    errors = [g["error"] for g in got if isinstance(g, dict)]
    if errors:
        raise StepFailed(f"a client failed: {errors[0]}")
    out: dict = {"kind": kind, "concurrency": len(names), "client_processes": procs, "rounds": []}
    measured: list[float] = []
    for r in range(rounds + 1):
        lat = [x for g in got for x in g[r]["latencies"]]
        statuses: Counter = Counter()
        for g in got:
            statuses.update(g[r]["statuses"])
        wall = max(g[r]["wall"] for g in got)
        cpu = sum(g[r]["cpu"] for g in got)
        out["rounds"].append({"first": r == 0, **_latency_summary(lat), "statuses": dict(statuses),
                              "wall_seconds": round(wall, 3), "client_cpu_seconds": round(cpu, 3),
                              "requests_per_second": round(len(lat) / wall, 1) if wall else None})
        if r:
            measured += lat
    out["statuses"] = dict(sum((Counter(x["statuses"]) for x in out["rounds"][1:]), Counter()))
    if measured:
        out["measured"] = _latency_summary(measured)
        # one client process on one core: when its CPU is most of the wall time, it is what limits the figure
        walls = [x["wall_seconds"] for x in out["rounds"][1:]]
        cpus = [x["client_cpu_seconds"] for x in out["rounds"][1:]]
        out["client_cpu_share"] = round(sum(cpus) / sum(walls) / procs, 2) if sum(walls) else None
    return out


# -- the run ------------------------------------------------------------------------------------


def run_scale(opts: ScaleOptions, log: Log) -> dict:
    """Build or reuse the store, serve it, measure every step; the document of the run (never raises for a step)."""
    from tests.support.service import Service

    started = dt.datetime.now(dt.timezone.utc)
    load_start = [round(x, 2) for x in os.getloadavg()]
    doc: dict = {"kind": "scale", "date": started.strftime("%Y-%m-%d"), "started": started.isoformat(),
                 "load_average_at_start": load_start, "machine": machine(), "db": opts.db,
                 "generator": {"products": opts.args.products, "versions_per_product": opts.args.versions_per_product,
                               "files": opts.args.files, "seed": opts.args.seed},
                 "options": {"lookups": opts.lookups, "publish_reps": opts.publish_reps,
                             "closure_products": opts.closure_products, "concurrency": opts.concurrency,
                             "rounds": opts.rounds, "client_procs": opts.client_procs,
                             "mount_timeout": opts.mount_timeout},
                 "steps": {}, "notes": []}
    steps = doc["steps"]
    tmp = opts.workdir is None
    work = Path(tempfile.mkdtemp(prefix="prodfs-scale-")) if tmp else opts.workdir.resolve()  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    mounts: list[Mount] = []
    try:
        with contextlib.ExitStack() as stack:
            try:
                store = ensure_store(opts.store_dir, opts.db, opts.args, log, build_timeout=opts.build_timeout)
            except BenchError as exc:
                doc["store"] = {"error": str(exc)}
                log(f"no store: {exc}")
                return _finish(doc, started)
            doc["store"] = _store_json(store)
            if store.reused and store.record.get("generator_sha256") != generator_sha256():
                doc["notes"].append("The store was built by another bench/gen_history.py than this one: "
                                    "if its layout changed, the sampled names may miss (rebuild: remove "
                                    f"{store.path}).")
            if store.record.get("runs"):
                doc["notes"].append(f"The store is reused: {len(store.record['runs'])} earlier runs published "
                                    "versions and wrote workspace revisions in it (its store.json lists them).")
            url = None
            if opts.db == "postgresql":
                try:
                    url = stack.enter_context(postgres(store.pg_dir, log))
                except BenchError as exc:
                    doc["service"] = {"error": str(exc)}
                    return _finish(doc, started)
            doc["database_version"] = database_version(opts.db, url)
            log(f"database: {doc['database_version']}")
            p = plan(opts.args, opts.lookups, opts.publish_reps, opts.concurrency, opts.closure_products)
            doc["notes"] += p.notes
            svc = Service(store.data, db_url=url, work_dir=work, extra_args=["--log-level", "warning"])
            try:
                svc.start(timeout=300)
            except Exception as exc:  # noqa: BLE001 - ServiceFailed or an OSError: no measurement possible
                doc["service"] = {"error": str(exc)[-500:]}
                return _finish(doc, started)
            stack.callback(svc.stop)
            stack.callback(_stop_all, mounts)  # before the service stops
            doc["service"] = {"url": svc.url}
            log(f"PVC service at {svc.url}")
            _measure(doc, steps, opts, p, svc.url, work, mounts, store, log)
            doc["service_log_problems"] = [ln for ln in svc.log().splitlines()
                                           if "Traceback" in ln or " ERROR " in ln][:20]
    finally:
        _stop_all(mounts)
        if tmp and not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            doc["workdir"] = str(work)
    return _finish(doc, started)


def _measure(doc: dict, steps: dict, opts: ScaleOptions, p: Plan, url: str, work: Path, mounts: list[Mount],
             store: Store, log: Log) -> None:
    import httpx

    def attempt(name: str, fn: Callable[[], dict]) -> dict | None:
        log(f"{name} ...")
        t = time.monotonic()
        try:
            steps[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a step that fails is a row "not met (why)", the run goes on
            steps[name] = {"error": str(exc)[:500] if isinstance(exc, StepFailed) else repr(exc)[:500]}
        steps[name]["step_seconds"] = round(time.monotonic() - t, 2)
        log(f"{name}: {_brief(steps[name])}")
        return steps[name] if "error" not in steps[name] else None

    changes: dict = {"date": doc["started"]}  # what this run adds to the store, noted in its store.json
    with httpx.Client(base_url=url, timeout=120) as http:
        live = Mount(work / "mnt-live", work / "cache-live", work / "live.log", url, [], opts.mount_timeout)
        mounts.append(live)
        if attempt("live_mount", lambda: step_live_mount(live)):
            attempt("lookups", lambda: step_lookups(live, p.lookups))
            attempt("publish", lambda: step_publish(live, http, p.publish))
            changes["published"] = [f"{r['pri']}@{r['after']}" for r in steps["publish"].get("reps", [])
                                    if "after" in r]
        else:
            why = f"the live mount failed: {steps['live_mount']['error']}"
            steps["lookups"] = {"error": why}
            steps["publish"] = {"error": why}
        doc["daemon_log_problems"] = {"live": _log_problems(live.log)}
        live.stop()  # the workspace mount and the service's bursts run alone
        ws = Mount(work / "mnt-ws", work / "cache-ws", work / "workspace.log", url, ["--workspace", WORKSPACE],
                   opts.mount_timeout)
        mounts.append(ws)
        attempt("workspace", lambda: step_workspace(http, p, ws))
        if "revision" in steps["workspace"]:
            changes["workspace"] = f"{WORKSPACE} revision {steps['workspace']['revision']}"
        store.add_run(changes)
        doc["daemon_log_problems"]["workspace"] = _log_problems(ws.log)
        ws.stop()
        for kind in ("closure", "product"):
            attempt(f"burst_{kind}", lambda kind=kind: _burst_or_fail(http, url, kind, p.requests, opts))
        # last, alone: what today's daemon loads before it mounts (where the mount's time goes)
        attempt("index_request", lambda: step_index(url, opts.mount_timeout))


def step_index(url: str, timeout: float) -> dict:
    """``GET /index`` streamed and counted, not parsed: its size and time, without holding it."""
    import httpx

    def run() -> dict:
        t = time.perf_counter()
        size = 0
        with httpx.stream("GET", url + API + "/index", timeout=timeout) as resp:
            first = None
            for chunk in resp.iter_raw(1 << 20):
                first = first or time.perf_counter() - t
                size += len(chunk)
            if resp.status_code != 200:
                raise StepFailed(f"GET /index answered {resp.status_code}")
        return {"bytes": size, "seconds": round(time.perf_counter() - t, 3),
                "first_byte_seconds": round(first or 0, 3)}

    return bounded(run, timeout + 30)


def _burst_or_fail(http: Any, url: str, kind: str, names: list[str], opts: ScaleOptions) -> dict:
    if kind == "closure":
        # the mount's future first-lookup request: a service without depth/missing refuses it (422)
        probe = http.post(f"{API}/closure", json={"roots": [names[0]], "depth": 0, "missing": "omit"})
        if probe.status_code != 200:
            raise StepFailed(f"the service does not take this request yet: {probe.status_code} "
                             f"{probe.text[:160]}")
    return step_burst(url, kind, names, opts.rounds, opts.client_procs)


def _stop_all(mounts: list[Mount]) -> None:
    for m in mounts:
        with contextlib.suppress(Exception):
            m.stop()


def _log_problems(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if "Traceback" in ln or "ERROR" in ln][:20]


def _brief(step: dict) -> str:
    if "error" in step:
        return f"failed: {step['error'][:200]}"
    keys = ("seconds", "rss_bytes", "median_seconds", "worst_seconds", "closure_products")
    shown = {k: step[k] for k in keys if k in step}
    if "first" in step:
        shown["first_p99_ms"] = step["first"].get("p99_ms")
    if "measured" in step:
        shown["p99_ms"] = step["measured"]["p99_ms"]
    return json.dumps(shown)


def _store_json(store: Store) -> dict:
    r = store.record
    return {"path": str(store.path), "key": store.path.name, "reused": store.reused, "built": r.get("built"),
            "build_seconds": r.get("build_seconds"), "import_summary": r.get("import_summary"),
            "bytes": r.get("bytes"), "generator_sha256": r.get("generator_sha256"),
            "earlier_runs": len(r.get("runs", []))}


def _finish(doc: dict, started: dt.datetime) -> dict:
    from ._scale_report import check_targets

    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    doc["seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    doc["target_checks"] = check_targets(doc)
    return doc
