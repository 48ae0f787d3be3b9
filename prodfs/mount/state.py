"""What a mount resolves against: the graph, the context and its resolution.

Plain logic, no I/O: the daemon feeds it the graph it loaded and the change
feed's events; the namespace asks it what a root name means. Resolution runs
here, never in a FUSE handler: handlers only read ``self.resolution``.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache
from pvc_client import InvalidPRI, Ref, parse_ref, parse_time, to_micros

from ..resolution import Choice, Context, Dep, Graph, ProductInfo, Resolution, VersionInfo, resolve, resolve_since
from ..storage import Want

log = logging.getLogger(__name__)

__all__ = ["View", "MountState", "NameError_", "ConflictError", "Unknown"]

# names the service said do not exist, kept until the feed says otherwise;
# bounded, and timed so a mount whose feed was down cannot keep one forever
_MISSING_SIZE = 65536
_MISSING_TTL = 600.0


class NameError_(Exception):
    """A root name that does not name anything visible (ENOENT) or is malformed (EINVAL)."""

    def __init__(self, message: str, *, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


class Unknown(NameError_):
    """A name of a product the mount has not learned yet: ask the service (`learned`), then again."""

    def __init__(self, message: str, pri: str) -> None:
        super().__init__(message)
        self.pri = pri


class ConflictError(Exception):
    """A versionless name whose product the strategy left unresolved (EIO)."""


@dataclass(frozen=True, slots=True)
class View:
    """A product version as reached through one root name."""

    name: str  # as spelled in the root: "PRI", "PRI@3", "PRI@published"
    pri: str  # canonical
    number: int
    product_id: int
    created_us: int
    kind: str  # "versionless" | "explicit" | "label"
    rule: str  # why this version: the resolver's rule, "explicit", "label:NAME"

    @property
    def ref(self) -> str:
        return f"{self.pri}@{self.number}"


class MountState:
    """The graph a mount knows, and what its names resolve to.

    The graph holds what the mount touched, not the store: the closure of
    the context's roots (``complete``: loaded with everything they may
    depend on, so the resolver's walk never leaves it), plus each product
    learned when one of its names was first looked up. A name of a product
    outside the graph raises `Unknown` until the daemon has asked the
    service (`learned`); the service's "no such product" is kept in
    ``missing`` until the feed shows the name.
    """

    def __init__(self, context: Context, graph: Graph, *, snapshot: dict | None = None,
                 complete: set[str] | None = None) -> None:
        self.context = context
        self.graph = graph
        # canonical PRIs whose dependencies (through every visible version) are in the graph too
        self.complete: set[str] = set(graph.products) if complete is None else complete
        self.missing: TTLCache[str, bool] = TTLCache(_MISSING_SIZE, _MISSING_TTL)
        self.resolver_runs = 1  # walks of the workspace's graph (changes elsewhere need none)
        # the newest feed event the mount has taken in: an answer older than that may
        # lack a change the feed already passed over (its product was not known then)
        self.seen = graph.cursor
        # A snapshot is a frozen resolution: {canonical pri: number}
        self.snapshot_choices: dict[str, int] | None = (
            {k: int(v) for k, v in snapshot["choices"].items()} if snapshot else None
        )
        self._choice_order: list[str] | None = None  # the snapshot's chosen names, sorted (on first use)
        self.resolution: Resolution = resolve(graph, context)
        self.last_decided = len(self.resolution.choices)  # products the last resolver run decided
        self.generation = 0  # bumped when the resolution changes
        # name -> {"pri", "number", "rule", "first_used", "last_used", "history": [...]}
        self.resolved: dict[str, dict] = {}
        self._used_by: dict[str, list[str]] = {}  # a used name's PRI part as spelled -> those names

    # -- time ------------------------------------------------------------
    @property
    def pin_us(self) -> int | None:
        return self.context.pin_us

    @property
    def names_can_change(self) -> bool:
        """False when no root name can ever map to another version (snapshot)."""
        return self.snapshot_choices is None

    def _visible(self, v: VersionInfo | None) -> VersionInfo | None:
        if v is None or (self.pin_us is not None and v.created_us > self.pin_us):
            return None
        return v

    # -- names -------------------------------------------------------------
    def parse_name(self, name: str) -> Ref:
        try:
            return parse_ref(name)
        except InvalidPRI as exc:
            # A '@' means someone tried to name a version: say why it failed.
            raise NameError_(str(exc), malformed="@" in name) from None

    def unknown_pri(self, name: str) -> str | None:
        """The PRI of a root name whose product is to be learned; None when known (or known absent, or malformed)."""
        pri = name.split("@", 1)[0]
        if pri in self.graph.products or pri in self.graph.aliases or pri in self.missing:
            return None
        try:
            return parse_ref(name).pri.text
        except InvalidPRI:
            return None

    def view(self, name: str) -> View:
        """What a root entry name resolves to; raises NameError_ (Unknown) or ConflictError."""
        ref = self.parse_name(name)
        product = self.graph.get(ref.pri.text)
        if product is None:
            if ref.pri.text in self.missing:
                raise NameError_(f"{ref.pri}: no such product")
            raise Unknown(f"{ref.pri}: not learned yet", ref.pri.text)
        if ref.number is not None:
            v = self._visible(product.versions.get(ref.number))
            if v is None:
                raise NameError_(f"{name}: no such version")
            return self._make(name, product, v, "explicit", "explicit")
        if ref.label is not None:
            number = self.label_number(product, ref.label)
            v = self._visible(product.versions.get(number)) if number is not None else None
            if v is None:
                raise NameError_(f"{name}: no version carries label {ref.label!r}")
            return self._make(name, product, v, "label", f"label:{ref.label}")
        number, rule = self.choose(product)
        v = self._visible(product.versions.get(number)) if number is not None else None
        if v is None:
            raise NameError_(f"{name}: no visible version")
        return self._make(name, product, v, "versionless", rule)

    def snapshot_companions(self, view: View, limit: int, skip: Callable[[str, int], bool]) -> list[Want]:
        """Up to ``limit`` of the snapshot's other chosen versions, nearest ``view``'s product in
        name order (a shot's products share prefixes, and are read together), leaving out
        those ``skip(pri, number)`` says; none for a mount that is not a snapshot's.

        At most a few times ``limit`` names are looked at, however large the snapshot.
        """
        if self.snapshot_choices is None or limit <= 0:
            return []
        if self._choice_order is None:
            self._choice_order = sorted(self.snapshot_choices)
        order = self._choice_order
        at = bisect.bisect_left(order, view.pri)
        out: list[Want] = []
        below, above = at - 1, at
        for _ in range(4 * limit):
            # nearest first: alternate sides while both have names left
            if above < len(order) and (below < 0 or above - at <= at - below):
                name, above = order[above], above + 1
            elif below >= 0:
                name, below = order[below], below - 1
            else:
                break
            product = self.graph.get(name)
            number = self.snapshot_choices[name]
            v = product.versions.get(number) if product is not None else None
            if v is None or product.pri == view.pri or skip(product.pri, number):  # type: ignore[union-attr]
                continue
            out.append(Want(product.pri, number, product.product_id, v.created_us))  # type: ignore[union-attr]
            if len(out) >= limit:
                break
        return out

    def label_number(self, product: ProductInfo, label: str) -> int | None:
        if label == "latest":
            v = product.newest(self.pin_us)
            return v.number if v else None
        return product.labels.get(label)

    def choose(self, product: ProductInfo) -> tuple[int | None, str]:
        if self.snapshot_choices is not None and product.pri in self.snapshot_choices:
            return self.snapshot_choices[product.pri], "snapshot"
        choice = self.resolution.choose(product.pri)
        if choice is None:
            return None, "none"
        if choice.conflict is not None and choice.number is None:
            raise ConflictError(choice.conflict.message)
        return choice.number, choice.rule

    def choice(self, pri: str) -> Choice | None:
        c = self.graph.canonical(pri)
        return self.resolution.choose(c) if c else None

    def _make(self, name: str, p: ProductInfo, v: VersionInfo, kind: str, rule: str) -> View:
        return View(name, p.pri, v.number, p.product_id, v.created_us, kind, rule)

    def listing(self) -> list[str]:
        """The versionless names of the products the mount knows, with a visible version.

        The root lists the service's products; this is what it lists when
        the service cannot be asked.
        """
        return sorted(p.pri for p in self.graph if p.newest(self.pin_us) is not None)

    # -- learning ------------------------------------------------------------
    def behind(self, answer: dict) -> bool:
        """Whether a service answer is older than feed events this mount has already taken in."""
        return int(answer.get("cursor") or 0) < self.seen

    def learned(self, answer: dict, *, complete: bool) -> list[str]:
        """Fold a ``/closure`` answer in; return the canonical PRIs it added.

        ``complete`` when the answer holds the closure of its roots (not
        depth 0). Roots it answers as unknown are kept in ``missing``.
        """
        added = self.graph.merge(answer)
        for root in answer.get("roots", ()):
            if root.get("pri") is None:
                ref = root.get("ref", "")
                self.missing[ref.split("@", 1)[0]] = True
        if complete:
            self.complete.update(answer.get("products", ()))
        return added

    def incomplete_deps(self, touched: set[str]) -> set[str]:
        """Dependencies of complete products that are not complete themselves.

        A new version of a product in a closure may depend on a product
        the mount never loaded (or learned alone): its closure is needed
        before the resolver walks there.
        """
        out: set[str] = set()
        for pri in touched:
            if pri not in self.complete:
                continue
            p = self.graph.get(pri)
            for v in p.versions.values() if p else ():
                for d in v.dependencies:
                    c = self.graph.canonical(d.pri)
                    if c is None or c not in self.complete:
                        out.add(c or d.pri)
        return out

    # -- what was used -----------------------------------------------------
    def record_use(self, view: View, resolved: bool = False) -> None:
        """Note a use of ``view``; ``resolved`` when its name was just resolved (a root lookup).

        Other uses (a listing, a lookup below) may come through a directory
        opened before the name moved on: they never bring an old version back.
        """
        if view.kind == "explicit":
            return
        now = time.time()
        rec = self.resolved.get(view.name)
        if rec is not None and rec["number"] == view.number:
            rec["last_used"] = now
            return
        if not resolved and rec is not None:
            return
        if rec is None:
            rec = {"name": view.name, "first_used": now, "history": []}
            self.resolved[view.name] = rec
            self._used_by.setdefault(view.name.split("@", 1)[0], []).append(view.name)
        rec.update(pri=view.pri, number=view.number, ref=view.ref, rule=view.rule, last_used=now)
        rec["history"].append({"time": now, "ref": view.ref})
        log.info("resolved %s -> %s (%s)", view.name, view.ref, view.rule)

    # -- change ------------------------------------------------------------
    def apply_event(self, ev: dict) -> set[str]:
        """Fold one change-feed event into the graph; return the names it may affect."""
        kind = ev.get("kind")
        pri = ev.get("pri")
        touched: set[str] = set()
        if kind == "publish" and pri:
            created = to_micros(parse_time(ev["created_at"]))
            if self.pin_us is not None and created > self.pin_us:
                return touched
            product = self.graph.get(pri)
            if product is None:
                # not followed: only a name looked up in vain must be asked again
                if self.missing.pop(pri, None):
                    touched.add(pri)
                return touched
            deps = tuple(Dep.parse(d) for d in ev.get("dependencies", ()))
            product.versions[int(ev["number"])] = VersionInfo(int(ev["number"]), created, deps)
            touched.add(product.pri)
        elif kind == "label" and pri:
            product = self.graph.get(pri)
            if product is not None and self.pin_us is None:
                if ev.get("number") is None:
                    product.labels.pop(ev["label"], None)
                else:
                    product.labels[ev["label"]] = int(ev["number"])
                touched.add(product.pri)
        elif kind == "rename" and pri and ev.get("old_pri"):
            if self.pin_us is None or to_micros(parse_time(ev["time"])) <= self.pin_us:
                old = ev["old_pri"]
                if self.graph.get(old) is not None:
                    self.graph.rename(old, pri)
                    if old in self.complete:
                        self.complete.discard(old)
                        self.complete.add(pri)
                    touched.update((pri, old))
                elif self.missing.pop(pri, None):
                    touched.add(pri)  # the new name was looked up in vain
        return touched

    def needs_resolver(self, touched: set[str] | None) -> bool:
        """Whether a change to ``touched`` (None: anything) can move the workspace's graph.

        The resolver walks the graph of the roots, which lies in their
        closure: a change outside the closure cannot move it.
        """
        return touched is None or bool(touched & self.complete)

    def reresolve(self, touched: set[str] | None = None) -> set[str]:
        """Resolve again after ``touched`` changed (None: anything may have); return
        the canonical PRIs whose versionless choice changed."""
        if self.needs_resolver(touched):
            return self.adopt(self.resolver_job(touched)(), touched)
        return self.forget(touched or set())

    def resolver_job(self, touched: set[str] | None) -> Callable[[], Resolution]:
        """The resolution to make after ``touched`` changed, as a call (for a thread).

        Only what the change can move is decided again (`resolve_since`),
        unless anything may have changed (None: a new context, a rename).
        """
        graph, context = self.graph, self.context
        if touched is None:
            return lambda: resolve(graph, context)
        old = self.resolution
        pris = {c for t in touched if (c := graph.canonical(t)) is not None}
        return lambda: resolve_since(old, graph, pris)

    def forget(self, touched: set[str]) -> set[str]:
        """A change outside the closure: only the touched products' own choices are made again."""
        old = self.resolution
        pris = {c for t in touched if (c := self.graph.canonical(t)) is not None}
        before = {p: _num(old.choose(p)) for p in pris if p in old.asked}
        old.forget(pris)
        return self._moved({p for p, n in before.items() if n != _num(old.choose(p))})

    def adopt(self, new: Resolution, touched: set[str] | None = None) -> set[str]:
        """Serve ``new`` (a resolution of this graph and context, made meanwhile); return what moved."""
        old = self.resolution
        self.resolver_runs += 1
        self.last_decided = new.decided if new.decided is not None else len(new.choices)
        # a part decided again: nothing else of the graph can have moved
        decided = new.part if new.part is not None else set(old.choices) | set(new.choices)
        pris = decided | set(old.asked) | (touched or set())
        changed = {p for p in pris if self.graph.canonical(p) is not None
                   and _num(old.choose(p)) != _num(new.choose(p))}
        self.resolution = new
        return self._moved(changed)

    def _moved(self, changed: set[str]) -> set[str]:
        if changed:
            self.generation += 1
        return changed

    def set_context(self, context: Context) -> set[str]:
        self.context = context
        return self.reresolve()

    def replace_graph(self, graph: Graph, complete: set[str]) -> None:
        """Hold another graph (another pin): nothing learned of the old one is kept."""
        self.graph, self.complete = graph, complete
        self.missing.clear()

    def names_for(self, pris: set[str]) -> set[str]:
        """Root names (as used so far, plus canonical and alias spellings) of these products."""
        names: set[str] = set()
        for pri in pris:
            p = self.graph.get(pri)
            names.add(pri)
            if p is not None:
                names.add(p.pri)
                names.update(p.aliases)
        # every spelling of these products' names is among ``names``: the used
        # names under them, not a walk over every name used
        for base in list(names):
            names.update(self._used_by.get(base, ()))
        return names


def _num(choice: Choice | None) -> int | None:
    return None if choice is None else choice.number
