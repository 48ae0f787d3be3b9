"""The ProdFS daemon: load the context, mount, serve, follow the change feed.

``python -m prodfs.mount.daemon MOUNTPOINT [options]`` (usually started by
``prodfs mount``, which waits on ``--ready-fd`` for the mount to serve).
Everything runs on one trio thread; disk work and hashing go to threads.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import pwd
import resource
import signal
import sys
import time
from pathlib import Path

import trio

from pvc_client import NotFound, PVCClient, PVCError, Unavailable, format_time, from_micros, parse_time, publish_manifest, to_micros

from ..kernel import (
    FastLookups, FastReads, Passthrough, pyfuse3, raise_readahead, why_zero_open_unavailable, zero_open_sessions,
)
from ..resolution import Context, Graph, create_snapshot, load_closure
from ..stats import Stats, prometheus_text
from ..storage import BlobCache, SavedContexts, VersionStore, Want, pin_key, snapshot_key
from . import _sdnotify
from .fs import LONG, Operations
from .learning import Learner
from .namespace import ROOT, Namespace
from .outputs import Outputs, PublishRefused
from .options import add_mount_options, default_cache_dir, expand_o_options, join_time_values
from .state import MountState, View
from .users import LOCK_NAME, live_records, read_records, try_lock

log = logging.getLogger("prodfs")

_ROOT_LISTING = None  # queued for the invalidator: the root's listing changed
_ROOT_ONLY = ""  # no name to invalidate, but the root's listing changed
# products in the roots' closure above which the resolver runs on a thread
# (about 12 ms of CPU per 1,000 products: a longer stall of the event loop shows)
_RESOLVE_INLINE = 2000


def _invalidate_root() -> None:
    try:
        pyfuse3.invalidate_inode(ROOT, attr_only=False)
    except OSError as exc:  # ENOENT: the kernel holds nothing of it
        log.debug("invalidating the root's listing: %s", exc)

__all__ = ["Daemon", "main", "build_parser"]


# versions whose manifests a snapshot mount asks along with one it misses
COMPANIONS = 256


class StartupError(Exception):
    """A problem that stops a mount before it serves: reported as one line."""


class Daemon:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.stats = Stats()
        self.mountpoint = os.path.abspath(opts.mountpoint)
        self.cache_dir = Path(opts.cache_dir or default_cache_dir())
        token = os.environ.get("PVC_TOKEN")
        if opts.token_file:
            token = Path(opts.token_file).read_text().strip()
        # A FUSE request waits on PVC for --pvc-timeout at most, retries included.
        self.client = PVCClient(opts.pvc, token=token, timeout=opts.pvc_timeout, deadline=opts.pvc_timeout)
        # The feed has its own loop and backoff: a failed long-poll is reported
        # (degraded) at once rather than after the client's retries.
        self.feed_client = PVCClient(opts.pvc, token=token, timeout=opts.pvc_timeout, retries=0,
                                     max_connections=2)
        self.saved = SavedContexts(self.cache_dir)
        self.io_limiter = trio.CapacityLimiter(8)
        self.blobs = BlobCache(self.cache_dir, self.client.download_blob, max_bytes=opts.cache_size, stats=self.stats,
                               trust_ledger=opts.cache_verify == "once", download_pack=self.client.download_pack)
        self.versions = VersionStore(self._fetch_version, self.cache_dir, self.stats, fetch_many=self._fetch_versions)
        self._batch_versions = True  # False once the service showed it has no POST /versions/batch
        self.state: MountState
        self.namespace: Namespace
        self.snapshot: dict | None = None
        self.workspace: dict | None = None
        self.root_timeout = LONG
        self.ops: Operations | None = None
        self._invalidate: trio.MemorySendChannel | None = None
        self._last_snapshot: tuple | None = None
        self._unused_lock: int | None = None  # held from the decision to unmount until the process ends
        self.scratch_dir = Path(opts.scratch) if opts.scratch else self.cache_dir / "scratch"
        self.outputs: Outputs
        self._published: dict[str, tuple[float, dict]] = {}  # publish token -> (when, answer)
        self.learner: Learner
        self._unsaved = False  # learned products not in the saved context yet (fixed mounts)

    @property
    def writable(self) -> bool:
        """A workspace mount: its outputs (now or after a change of the workspace) are writable."""
        return bool(self.opts.workspace) and not self.opts.snapshot

    async def _fetch_version(self, pri: str, number: int) -> dict:
        return await self.client.get_version(pri, number)

    async def _fetch_versions(self, refs: list[tuple[str, int]]) -> list[dict | None]:
        if not self._batch_versions:
            raise PVCError("the service has no POST /versions/batch")
        try:
            # an unknown one is answered None: the store asks for the wanted one alone, which says why
            return await self.client.get_versions(refs, missing="omit")
        except NotFound:
            # with missing=omit only a service without the endpoint answers 404: stop asking it
            self._batch_versions = False
            raise

    # -- context -----------------------------------------------------------
    def _cli_context(self) -> Context:
        o = self.opts
        pin_us = to_micros(parse_time(o.pin)) if o.pin and o.pin != "none" else None
        return Context(
            roots=tuple(o.root), strategy=o.strategy or "latest", pin_us=pin_us,
            prefer=tuple(o.prefer), overrides=tuple(o.override),
        )

    def _context(self, snapshot: dict | None) -> Context:
        o = self.opts
        if snapshot is not None:
            return Context.from_json(snapshot["record"]["context"]).replace(snapshot=snapshot["id"])
        if self.workspace is not None:
            context = Context.from_workspace(self.workspace)
            # command-line context options refine a workspace for this mount only
            if o.pin:
                context = context.replace(pin_us=self._cli_context().pin_us)
            return context
        return self._cli_context()

    def _saved_key(self) -> str | None:
        """The key of what this mount loads, if that never changes (offline starts)."""
        o = self.opts
        if o.snapshot:
            return snapshot_key(o.snapshot)
        if o.workspace or not o.pin or o.pin in ("none", "now") or o.pin.startswith("-"):
            return None  # live, or a relative pin: what it loads differs every time
        return pin_key(self._cli_context().pin_us)

    async def _load_online(self) -> tuple[dict | None, Context, dict]:
        o = self.opts
        snapshot = None
        if o.snapshot:
            snapshot = await self.client.get_snapshot(o.snapshot)
        elif o.workspace:
            self.workspace = await self.client.get_workspace(o.workspace)
        context = self._context(snapshot)
        answer = await self._closure(context, self.workspace)
        if snapshot is not None and snapshot["record"].get("choices"):
            # a render job reads what the snapshot froze: know all of it from the start
            chosen = await self.client.closure(sorted(snapshot["record"]["choices"]), as_of=answer["as_of"],
                                               depth=0, missing="omit")
            answer["complete"] = sorted(answer["products"])
            for pri, raw in chosen["products"].items():
                answer["products"].setdefault(pri, raw)
        return snapshot, context, answer

    async def _closure(self, context: Context, workspace: dict | None, *, skip: set[str] | None = None) -> dict:
        """The graph a mount starts with: the closure of what its context names, not the store
        (``skip``: products held with their closure already)."""
        names = [*context.roots, *context.overrides, *((workspace or {}).get("outputs") or ())]
        return await load_closure(self.client, names, context.pin_us, skip=skip or ())

    async def load(self) -> None:
        o = self.opts
        key = self._saved_key()
        try:
            snapshot, context, index = await self._load_online()
        except Unavailable as exc:
            saved = self.saved.load(key) if key else None
            if saved is None:
                raise
            snapshot, index = saved.get("snapshot"), saved["index"]
            context = self._context(snapshot)
            self.set_degraded(f"PVC unreachable at mount time ({exc}); serving the context saved by an earlier mount")
        else:
            if key:
                await trio.to_thread.run_sync(self.saved.save, key, {"snapshot": snapshot, "index": index})
        self.snapshot = snapshot
        graph, complete = _graph_of(index)
        self.state = MountState(context, graph, snapshot=snapshot["record"] if snapshot else None, complete=complete)
        self.namespace = Namespace(self.state, self.versions)
        if snapshot is not None:
            # a render job reads much of what the snapshot froze: its manifests come in batches
            self.namespace.companions = self._snapshot_companions
        self.learner = Learner(self.client, self.state, degraded=self._degraded_reason,
                               changed=self._learned_more, root_page=o.root_page)
        self.namespace.learn = self.learner.name
        self.outputs = Outputs(self.scratch_dir, self.state, self._base_entries)
        self.outputs.set_workspace(self.workspace)
        self.namespace.on_use = self.outputs.served
        # Names in a snapshot, or an ad hoc pinned context, never change.
        fixed = snapshot is not None or (context.pin_us is not None and not o.workspace)
        self.root_timeout = LONG if fixed else o.live_timeout
        log.info("context: %s; %d products loaded", context.describe(), len(self.state.graph))

    def _snapshot_companions(self, view: View) -> list[Want]:
        return self.state.snapshot_companions(view, COMPANIONS, self.versions.known)

    def _degraded_reason(self) -> str | None:
        return self.stats.degraded_reason if self.stats.degraded_since is not None else None

    def _learned_more(self) -> None:
        self._unsaved = True

    async def _keep_saved(self) -> None:
        """Keep the saved context (fixed mounts) up to date with what the mount learned.

        An offline start serves what was saved: the names a render node's
        job used must be in it, not only the roots' closure.
        """
        try:
            while True:
                await trio.sleep(2.0)
                await self._save_context()
        finally:
            with trio.CancelScope(shield=True):
                await self._save_context()

    async def _save_context(self) -> None:
        key = self._saved_key()
        if not self._unsaved or key is None:
            return
        self._unsaved = False
        doc = {"snapshot": self.snapshot, "index": self._saved_graph()}
        await trio.to_thread.run_sync(self.saved.save, key, doc)

    def _saved_graph(self) -> dict:
        doc = self.state.graph.to_json()
        doc["complete"] = sorted(self.state.complete)
        return doc

    async def root_page(self, after: str | None) -> tuple[list[str], str | None]:
        try:
            return await self.learner.root_page(after)
        except Unavailable as exc:
            self.set_degraded(str(exc))
            raise

    async def _base_entries(self, view) -> list:
        tree = await self.versions.get(view.pri, view.number, view.product_id, view.created_us)
        return list(tree.paths.values())

    # -- control files -----------------------------------------------------
    def control_content(self, name: str) -> bytes:
        state = self.state
        if name == "context.json":
            doc = {
                "mountpoint": self.mountpoint,
                "pvc": self.opts.pvc,
                "context": state.context.to_json(),
                "live": state.context.pin_us is None and self.snapshot is None,
                "workspace": self.workspace,
                "snapshot": self.snapshot["id"] if self.snapshot else None,
                "cursor": state.graph.cursor,
                "cache_dir": str(self.cache_dir),
                "products": len(state.graph),
                "outputs": self._outputs_status(),
            }
        elif name == "resolved.json":
            doc = {"context": state.context.to_json(), "resolved": sorted(state.resolved.values(), key=lambda r: r["name"])}
        elif name == "conflicts.json":
            doc = {"context": state.context.to_json(),
                   "conflicts": [c.to_json() for c in state.resolution.conflicts]}
        elif name == "stats.json":
            doc = self.status()
        elif name == "metrics.prom":
            return prometheus_text(self.status()).encode()
        else:
            doc = {}
        return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()

    def _outputs_status(self) -> list[dict]:
        opened = {o.pri: o for o in self.outputs.opened()}
        out = []
        for pri in self.outputs.declared:
            o = opened.get(pri)
            doc: dict = {"pri": pri, "started": o is not None}
            if o is not None:
                doc.update(scratch=str(o.tree.path), base=o.tree.info().get("base"),
                           dependencies=self.outputs.dependencies(o))
            elif self.outputs.busy_reason(pri):
                doc["read_only"] = self.outputs.busy_reason(pri)
            out.append(doc)
        return out

    # -- publishing outputs ----------------------------------------------------
    async def publish_output(self, token: str, request: bytes, uid: int) -> None:
        """``prodfs publish``: the output's tree becomes a new version (docs/outputs.md).

        The answer (or why it failed, the tree untouched) is kept under
        ``token`` for `publish_result`; the request itself never fails here.
        """
        try:
            doc = await self._publish(json.loads(request), uid)
        except (PublishRefused, PVCError) as exc:
            log.warning("publish refused: %s", exc)
            doc = {"error": str(exc), "code": getattr(exc, "code", None) or "refused"}
        except (ValueError, KeyError, TypeError) as exc:
            doc = {"error": f"a malformed publish request: {exc!r}", "code": "invalid_input"}
        now = time.monotonic()
        self._published = {k: v for k, v in self._published.items() if now - v[0] < 300}
        self._published[token] = (now, doc)

    def publish_result(self, token: str) -> dict:
        found = self._published.get(token)
        return found[1] if found else {"error": f"no publish {token!r} here", "code": "not_found"}

    async def _publish(self, req: dict, uid: int) -> dict:
        name = str(req["name"])
        pri = self.outputs.output_name(name)
        if pri is None:
            declared = ", ".join(self.outputs.declared) or "none"
            raise PublishRefused(f"{name} is not an output of this mount's workspace (outputs: {declared})")
        out = await self.outputs.open(pri)
        if out is None:
            raise PublishRefused(f"{pri}: {self.outputs.busy_reason(pri)}")
        async with out.lock:  # writes wait: what is hashed is what is published
            manifest, sources = await self.outputs.manifest(out)
            deps = self.outputs.dependencies(out)
            base = out.tree.info().get("base")
            doc: dict = {"pri": pri, "base": base, "dependencies": deps, "entries": len(manifest),
                         "workspace": self.outputs.origin(), "files_to_upload": len(sources)}
            if req.get("dry_run"):
                return {**doc, "dry_run": True}
            version = await publish_manifest(
                self.client, pri, manifest, sources, dependencies=deps, labels=list(req.get("labels") or ()),
                message=str(req.get("message") or ""), author=_user_name(uid), workspace=self.outputs.origin())
            out.tree.rebase(version["number"])
        log.info("published %s@%s from the output tree (%d entries, %d dependencies)",
                 pri, version["number"], len(manifest), len(deps))
        return {**doc, "number": version["number"], "ref": f"{pri}@{version['number']}", "version": version}

    async def explain(self, name: str) -> dict:
        """``prodfs why``: what a root name resolves to in this context, and why."""
        state = self.state
        doc: dict = {"name": name, "context": state.context.to_json(),
                     "context_description": state.context.describe()}
        try:
            await self.namespace.learn_name(name)
            view = state.view(name)
        except Exception as exc:  # noqa: BLE001 - the explanation is the answer
            doc["error"] = str(exc)
            ref = None
        else:
            doc.update(kind=view.kind, pri=view.pri, number=view.number, ref=view.ref, rule=view.rule)
            ref = view.pri
        choice = state.choice(ref or name.split("@", 1)[0])
        if choice is not None:
            doc["candidates"] = list(choice.candidates)
            doc["requests"] = [
                {"pri": r.pri, "number": r.number, "dependent": r.dependent, "hops": r.hops}
                for r in choice.requests
            ]
            doc["in_graph"] = choice.in_graph
            if choice.conflict is not None:
                doc["conflict"] = choice.conflict.to_json()
            doc.setdefault("rule", choice.rule)
        return doc

    async def make_snapshot(self) -> dict:
        """``prodfs snapshot MOUNTPOINT``: freeze this mount's resolution in PVC."""
        if self.snapshot is not None:
            return {"id": self.snapshot["id"], "record": self.snapshot["record"]}
        # getxattr comes twice (size, then value): answer both with one snapshot
        key = (self.state.generation, len(self.state.resolved))
        if self._last_snapshot and self._last_snapshot[0] == key and time.monotonic() - self._last_snapshot[1] < 10:
            return self._last_snapshot[2]
        used = {r["pri"]: r["number"] for r in self.state.resolved.values() if "@" not in r["name"]}
        workspace = self.workspace["name"] if self.workspace else None
        doc = await create_snapshot(self.client, self.state.context, workspace=workspace, extra_names=used)
        log.info("snapshot %s created (%d products)", doc["id"], len(doc["record"]["choices"]))
        self._last_snapshot = (key, time.monotonic(), doc)
        return doc

    def status(self) -> dict:
        c = self.client.stats if hasattr(self.client, "stats") else {}
        requests = c.get("requests", 0)
        fast = self.ops.fast.counters() if self.ops and self.ops.fast else {}
        fast_lookups = self.ops.fast_lookups.answered if self.ops and self.ops.fast_lookups else None
        through = self._passthrough_status()
        return self.stats.to_json(
            # requests answered in C count as such; the rest of their counters stand apart
            lookups=self.stats.lookups + (fast_lookups or 0),
            opens=self.stats.opens + (through["opens"] if through else 0),
            fast_lookups=fast_lookups,
            reads=self.stats.reads + fast.get("reads", 0),
            bytes_read=self.stats.bytes_read + fast.get("bytes_read", 0),
            fast_read=fast or None,
            passthrough=through,
            mountpoint=self.mountpoint,
            pvc=self.opts.pvc,
            pvc_requests=requests,
            pvc_latency_avg_ms=round(1000 * c.get("latency", 0.0) / requests, 3) if requests else None,
            pvc_client=c,
            cache=self.blobs.usage(),
            inodes=len(self.namespace),
            products=len(self.state.graph),
            products_complete=len(self.state.complete),
            resolver_runs=self.state.resolver_runs,
            resolver_decided=self.state.last_decided,
            learned=self.learner.learned,
            resolved=len(self.state.resolved),
            conflicts=len(self.state.resolution.conflicts),
            generation=self.state.generation,
            zero_open=bool(self.ops and self.ops.zero_open),
            control_snapshots=len(self.ops.control) if self.ops else 0,
        )

    def _passthrough_status(self) -> dict | None:
        p = self.ops.passthrough if self.ops else None
        if p is None:
            return None
        return {"active": p.active, "why_inactive": p.why_inactive(), **p.counters()}

    # -- health ------------------------------------------------------------
    def set_degraded(self, why: str) -> None:
        """PVC cannot be reached: say so (status, log) once, keep serving what is known."""
        if self.stats.degraded_since is None:
            self.stats.degraded_since = time.time()
            self.stats.degraded_reason = why
            log.warning("degraded: %s; serving the last known resolution and the cache", why)

    def set_healthy(self) -> None:
        if self.stats.degraded_since is not None:
            log.info("PVC reachable again after %.1fs: no longer degraded", time.time() - self.stats.degraded_since)
            self.stats.degraded_since = None
            self.stats.degraded_reason = None
            # the root was listed from what the mount knows meanwhile: list the store's names again
            self._queue_invalidations({_ROOT_ONLY})

    def service_failed(self, exc: BaseException) -> None:
        """A handler's request failed: an unreachable service makes the mount degraded."""
        if isinstance(exc, Unavailable):
            self.set_degraded(str(exc))

    async def watch_service(self) -> None:
        """Without a feed (snapshots), find out when a degraded mount's service is back."""
        backoff = 1.0
        while True:
            await trio.sleep(backoff)
            if self.stats.degraded_since is None:
                backoff = 1.0
                continue
            try:
                await self.feed_client.health()
            except PVCError:
                backoff = min(backoff * 2, 10.0)
                continue
            self.set_healthy()

    # -- change feed -------------------------------------------------------
    async def follow_feed(self) -> None:
        backoff = 0.5
        while True:
            try:
                page = await self.feed_client.events(after=self.state.graph.cursor, timeout=self.opts.feed_poll)
            except PVCError as exc:
                self.set_degraded(f"the change feed failed: {exc}")
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self.set_healthy()
            backoff = 0.5
            await self.apply_events(page.get("events", []))
            self.state.graph.cursor = max(self.state.graph.cursor, int(page.get("cursor", 0)))

    async def apply_events(self, events: list[dict]) -> None:
        """Fold a page of the feed in. Events of products the mount does not follow
        cost a dict lookup; only a change to the roots' closure runs the resolver."""
        if not events:
            return
        touched: set[str] = set()
        reload_workspace = new_names = renamed = False
        state = self.state
        state.seen = max(state.seen, *(int(ev.get("id") or 0) for ev in events))
        for ev in events:
            self.stats.events += 1
            kind = ev.get("kind")
            if kind == "workspace" and self.workspace and ev.get("name") == self.workspace["name"]:
                reload_workspace = True
                continue
            touched |= state.apply_event(ev)
            if kind == "rename":
                self.versions.rename(ev["old_pri"], ev["pri"])
                new_names = renamed = True
            elif kind == "publish" and ev.get("number") == 1:
                new_names = True  # a new product: a new name in the root's listing
        if reload_workspace:
            touched |= await self._reload_workspace()
        await self._complete(touched)
        # a rename moves names under the old resolution's choices: decide everything again
        scope = None if reload_workspace or renamed else touched
        if not state.needs_resolver(scope):
            changed = state.forget(touched)
        else:
            job = state.resolver_job(scope)
            if len(state.complete) < _RESOLVE_INLINE:
                new = job()
            else:
                # a large graph: resolved on a thread, so requests keep being answered
                # meanwhile. This task is the only one that changes versions, labels
                # or the context, and it waits; lookups meanwhile only add products
                # outside the closure, which the resolver never reads.
                new = await trio.to_thread.run_sync(job)
            changed = state.adopt(new, scope)
        self.stats.resolutions += 1
        names = state.names_for(touched | changed)
        if changed:
            log.info("resolution changed for %s", ", ".join(sorted(changed)))
        if new_names and not names:
            names = {_ROOT_ONLY}
        self._queue_invalidations(names)

    async def _complete(self, touched: set[str]) -> None:
        """Load what new versions in the roots' closure depend on, until the closure is whole."""
        for _ in range(100):  # each round follows the answers' own new dependencies; bounded anyway
            wanted = self.state.incomplete_deps(touched)
            if not wanted:
                return
            try:
                touched = set(await self.learner.closures(wanted))
            except PVCError as exc:
                # resolved without them meanwhile; the next change asks again
                self.set_degraded(f"loading the closure of {', '.join(sorted(wanted))} failed: {exc}")
                return
            touched |= wanted

    async def _reload_workspace(self) -> set[str]:
        assert self.workspace is not None
        ws = await self.client.get_workspace(self.workspace["name"])
        context = Context.from_workspace(ws)
        state = self.state
        before = {p.pri for p in state.graph}
        if context.pin_us != state.context.pin_us:
            # another time: another graph (what was learned at the old pin does not hold)
            state.replace_graph(*_graph_of(await self._closure(context, ws)))
        else:
            # the same time: what is known holds; load the closures of the new names
            state.learned(await self._closure(context, ws, skip=state.complete), complete=True)
        self.workspace = ws
        log.info("workspace %s changed (revision %s): %s", ws["name"], ws.get("revision"), context.describe())
        changed = state.set_context(context) | self.outputs.set_workspace(ws)
        # a new pin can change every name: invalidate all we ever answered
        return changed | before | {p.pri for p in state.graph}

    def _queue_invalidations(self, names: set[str]) -> None:
        if self._invalidate is None or not names:
            return
        if self.ops is not None:
            self.ops.root_changed()
        names.discard(_ROOT_ONLY)
        for n in [_ROOT_LISTING, *names]:
            try:
                self._invalidate.send_nowait(n)
            except trio.WouldBlock:
                break

    async def _invalidator(self, receive: trio.MemoryReceiveChannel) -> None:
        # Kernel notifications go out from their own task, never from inside a
        # handler touching the same inode (that can deadlock).
        async for name in receive:
            if name is _ROOT_LISTING:
                # The kernel's copy of the root's listing. This call waits for
                # the kernel, which may wait for a READDIRPLUS that only this
                # thread can answer: make it from another thread.
                await trio.to_thread.run_sync(_invalidate_root)
            else:
                pyfuse3.invalidate_entry_async(ROOT, name.encode(), ignore_enoent=True)
            self.stats.invalidations += 1

    # -- running -------------------------------------------------------------
    async def run(self, ready_fd: int | None = None) -> None:
        try:
            await self.load()
        except PVCError as exc:
            raise StartupError(f"cannot load the context from {self.opts.pvc}: {exc}") from None
        self.ops = ops = Operations(self)
        # What is loaded now (the index, the graph, the modules) lives as long
        # as the mount: keep the collector from walking it again and again,
        # which would stall requests for milliseconds at a time.
        gc.collect()
        gc.freeze()
        options = {"fsname=prodfs", "subtype=prodfs", "default_permissions"}
        if not self.writable:
            options.add("ro")
        if self.opts.allow_other:
            options.add("allow_other")
        if self._passthrough_wanted:
            Passthrough.want()  # offered to the kernel when it sends INIT
        try:
            pyfuse3.init(ops, self.mountpoint, options)
        except RuntimeError as exc:
            raise StartupError(f"cannot mount on {self.mountpoint}: {exc}") from None
        send, receive = trio.open_memory_channel(10000)
        self._invalidate = send
        try:
            self._fast_paths(ops)  # inside the try: whatever fails from here on, the mount is undone
            async with trio.open_nursery() as nursery:
                self.versions.behind = nursery.start_soon  # a snapshot's companions load behind a first access
                nursery.start_soon(self._signals, nursery.cancel_scope)
                nursery.start_soon(self._invalidator, receive)
                if self.snapshot is None:
                    nursery.start_soon(self.follow_feed)
                else:
                    nursery.start_soon(self.watch_service)
                nursery.start_soon(self._serve, nursery.cancel_scope)
                nursery.start_soon(self._readahead)
                nursery.start_soon(self.blobs.keep_ledger)
                if self._saved_key() is not None:
                    nursery.start_soon(self._keep_saved)
                if ops.fast_lookups is not None:
                    nursery.start_soon(ops.hand_over_listings)
                if self.opts.exit_when_unused is not None:
                    nursery.start_soon(self._exit_when_unused, nursery.cancel_scope)
                await trio.sleep(0)
                _ready(ready_fd, self.mountpoint)
        finally:
            self.versions.behind = None
            _sdnotify.notify("STOPPING=1")
            if ops.fast is not None:
                ops.fast.stop()  # its threads answer what they hold: the session must outlive them
                self.blobs.on_forget = self.blobs.read_elsewhere = None
            if ops.fast_lookups is not None:
                ops.fast_lookups.stop()
            pyfuse3.close(unmount=True)
            self.blobs.close()
            await self.client.aclose()
            await self.feed_client.aclose()
            log.info("unmounted %s", self.mountpoint)

    @property
    def _passthrough_wanted(self) -> bool:
        return not (self.opts.no_fast_path or self.opts.no_passthrough)

    def _fast_paths(self, ops: Operations) -> None:
        """What the kernel and the C library answer without the daemon, once the session exists."""
        if not self.opts.no_zero_open:
            ops.zero_open = zero_open_sessions()
            if not ops.zero_open:
                log.warning("every open and listing goes to the daemon (slower): %s", why_zero_open_unavailable())
        if self.opts.no_fast_path:
            return
        # A slot read in C holds an fd: leave most of the limit to the cache and the kernel's
        # requests. With passthrough, every open of a payload needs its slot and none keeps an fd.
        fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4
        ops.fast = FastReads.start(slots=65536 if self._passthrough_wanted else min(4096, fds), max_fds=fds)
        if ops.fast is None:
            log.info("reads and lookups go to the daemon: %s",
                     why_zero_open_unavailable() or "the C read path did not start")
            return
        self.blobs.on_forget = ops.fast.drop
        self.blobs.read_elsewhere = ops.fast.read_since
        ops.fast_lookups = FastLookups.start()
        ops.passthrough = Passthrough.start()

    async def _readahead(self) -> None:
        # The kernel fixes a mount's readahead when the daemon answers INIT
        # (at most what it offered at mount time): raise it once INIT is done,
        # and again should INIT have come after the first try.
        for delay in (0.05, 0.5, 2.0):
            await trio.sleep(delay)
            if raise_readahead(self.mountpoint) is None:
                break
        # INIT is answered by now: say once whether payloads are opened in passthrough.
        p = self.ops.passthrough if self.ops else None
        if p is not None and p.active:
            log.info("payloads are opened in passthrough: the kernel reads them from the cache")
        elif p is not None:
            log.info("no passthrough (%s): payloads are read through the daemon",
                     p.why_inactive() or "the kernel did not offer it")

    async def _serve(self, scope: trio.CancelScope) -> None:
        try:
            await pyfuse3.main()
        finally:
            scope.cancel()

    async def _exit_when_unused(self, scope: trio.CancelScope, *, first_grace: float = 10.0,
                                idle_grace: float = 1.0) -> None:
        """A ``prodfs exec`` context: unmount once none of its users is alive (docs/exec.md).

        Nobody registered ``first_grace`` seconds after the start, or no live user for
        ``idle_grace`` seconds: take the context's lock (never while a ``prodfs exec`` holds
        it), look once more, and unmount holding the lock until the process ends, so that
        a ``prodfs exec`` never binds a mount that is going away."""
        users = Path(self.opts.exit_when_unused)
        started = time.monotonic()
        seen = False
        idle_since: float | None = None
        while True:
            await trio.sleep(0.5)
            seen = seen or bool(read_records(users))  # registered, even if dead by now
            live = await trio.to_thread.run_sync(lambda: live_records(users, prune=True))
            now = time.monotonic()
            if live:
                seen, idle_since = True, None
                continue
            idle_since = idle_since or now
            if now - idle_since < idle_grace or (not seen and now - started < first_grace):
                continue
            fd = try_lock(users.parent / LOCK_NAME)
            if fd is None:
                continue
            if live_records(users):
                os.close(fd)
                continue
            self._unused_lock = fd
            log.info("no process uses this context any more: unmounting")
            pyfuse3.terminate()
            scope.cancel()
            return

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for sig in signals:
                log.info("received %s: unmounting", signal.Signals(sig).name)
                pyfuse3.terminate()
                scope.cancel()
                return


def _graph_of(answer: dict) -> tuple[Graph, set[str]]:
    """The graph of a Graph answer (or a saved context), and its products held with their closure:
    all of them, unless a saved context says which (it also holds products learned by name)."""
    graph = Graph.from_json(answer)
    return graph, set(answer["complete"]) if "complete" in answer else set(graph.products)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _ready(fd: int | None, mountpoint: str) -> None:
    log.info("serving %s", mountpoint)
    _sdnotify.notify("READY=1\nSTATUS=serving " + mountpoint)
    if fd is not None:
        try:
            os.write(fd, b"ready\n")
            os.close(fd)
        except OSError:
            pass


def _fail(fd: int | None, message: str) -> None:
    if fd is not None:
        try:
            os.write(fd, f"error: {message}\n".encode())
            os.close(fd)
        except OSError:
            pass


def setup_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if os.environ.get("JOURNAL_STREAM"):  # journald adds its own time stamps
        fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # one line per request from the HTTP stack would drown the daemon's own
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prodfs-daemon", description="Serve PVC products as a filesystem.")
    add_mount_options(p)
    return p


def _raise_fd_limit(wanted: int = 65536) -> None:
    """Payload fds are kept open (by the cache, and by the C read path): 1024 is a small soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d: %s", soft, exc)


def main(args: list[str] | None = None) -> int:
    argv = join_time_values(list(sys.argv[1:] if args is None else args))
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.o:
        opts = parser.parse_args(argv + expand_o_options(opts.o))
    setup_logging(opts.log_level, opts.log_file)
    _raise_fd_limit()
    try:
        daemon = Daemon(opts)
        trio.run(daemon.run, opts.ready_fd)
    except StartupError as exc:
        log.error("%s", exc)
        _fail(opts.ready_fd, str(exc))
        return 1
    except PVCError as exc:
        log.error("%s", exc)
        _fail(opts.ready_fd, str(exc))
        return 1
    except Exception as exc:  # a bug: say so in the log, and to the waiting parent
        log.exception("daemon failed")
        _fail(opts.ready_fd, f"daemon failed: {exc!r}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
