"""Publish a built plan to a PVC service, once.

Publishing is resumable and idempotent: versions the service already holds
(a product with k versions has the plan's first k) are skipped, so running
the demo twice, or again after an interruption, never publishes twice. The
`DemoShow` returned describes what the *service* holds: creation times and
label moves are read back from it, so the expectations hold even when the
show was published on another day.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from pvc_client import NotFound, parse_time, utcnow

from ._build import DemoPlan, Step
from ._model import LabelMove, ProductRecord, Show, VersionRecord

__all__ = ["DemoError", "DemoShow", "publish"]


class DemoError(Exception):
    """The service holds something the demo cannot publish over (or the plan cannot be published now)."""


class _Client(Protocol):  # the part of pvc_client.PVCClient used here
    async def list_versions(self, pri: str) -> list[dict[str, Any]]: ...
    async def publish_directory(self, pri: str, directory: Path, **kw: Any) -> dict[str, Any]: ...
    async def move_label(self, pri: str, label: str, number: int) -> dict[str, Any]: ...
    async def label_history(self, pri: str, label: str) -> list[dict[str, Any]]: ...


class DemoShow(Show):
    """The show as published on a service: expectations (see `Show`) with the service's times."""

    def __init__(self, *, url: str | None, already_published: bool, **show: Any) -> None:
        super().__init__(**show)
        self.url = url
        self.already_published = already_published

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "url": self.url, "already_published": self.already_published}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DemoShow:
        return cls(url=raw.get("url"), already_published=bool(raw.get("already_published", False)),
                   **cls._parts(raw))

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> DemoShow:
        return cls.from_json(json.loads(Path(path).read_text()))


K = TypeVar("K", bound=Hashable)
_READ_CONCURRENCY = 8
_PUBLISH_CONCURRENCY = 4


async def _gather(
    jobs: Iterable[tuple[K, Callable[[], Awaitable[Any]]]], concurrency: int | None = _READ_CONCURRENCY
) -> dict[K, Any]:
    """Run jobs concurrently (at most ``concurrency`` at a time; None: all); results by key."""
    out: dict[K, Any] = {}
    limit = trio.CapacityLimiter(concurrency) if concurrency else None

    async def one(key: K, job: Callable[[], Awaitable[Any]]) -> None:
        if limit is None:
            out[key] = await job()
            return
        async with limit:
            out[key] = await job()

    try:
        async with trio.open_nursery() as nursery:
            for key, job in jobs:
                nursery.start_soon(one, key, job)
    except BaseExceptionGroup as group:
        # Concurrent reads fail together (the service is down, say): report the
        # first plain error as it is, so callers catch PVCError, not a group.
        errors, rest = group.split(Exception)
        if rest is None and errors is not None:
            raise _first_leaf(errors) from None
        raise
    return out


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _versions_on_service(client: _Client, pri: str) -> list[dict[str, Any]]:
    try:
        return sorted(await client.list_versions(pri), key=lambda v: int(v["number"]))
    except NotFound:
        return []


async def _label_history(client: _Client, pri: str, label: str) -> list[dict[str, Any]]:
    try:
        return await client.label_history(pri, label)
    except NotFound:
        return []


def _check_holdings(plan: DemoPlan, held: Mapping[str, list[dict[str, Any]]]) -> None:
    for pri, versions in held.items():
        planned = plan.products[pri].versions
        if len(versions) > len(planned):
            raise DemoError(
                f"{pri} already has {len(versions)} versions on this service, the demo has "
                f"{len(planned)}: the service holds something other than the demo show"
            )
        for v in versions:
            if sorted(v.get("dependencies", [])) != sorted(planned[int(v["number"])].dependencies):
                raise DemoError(f"{pri}@{v['number']} on the service is not the demo's (other dependencies)")


async def publish(client: _Client, plan: DemoPlan, *, now: dt.datetime | None = None) -> DemoShow:
    """Publish what the service lacks of ``plan``, then describe the show as the service holds it."""
    held = await _gather((pri, lambda p=pri: _versions_on_service(client, p)) for pri in plan.products)
    _check_holdings(plan, held)
    todo = [s for s in plan.steps if s.number > len(held[s.pri])]
    now = now or utcnow()
    late = [s for s in todo if s.at > now]
    if late:
        raise DemoError(
            f"{late[0].ref} would be published at {late[0].at.isoformat()}, in the future: "
            f"build the plan with a start at least {len(plan.pins())} days ago"
        )
    for s in todo:
        newest = held[s.pri][-1] if held[s.pri] else None
        if newest is not None and parse_time(newest["created_at"]) > s.at:
            raise DemoError(
                f"{s.pri} was partly published from a later start ({newest['created_at']}); "
                f"rebuild the plan with the same start to finish it"
            )
    await _publish_steps(client, todo, held)

    history_end = max(parse_time(v["created_at"]) for vs in held.values() for v in vs)
    moves = plan.moves
    pasts = await _gather((i, lambda m=m: _label_history(client, m.pri, m.label)) for i, m in enumerate(moves))
    for i, m in enumerate(moves):
        # a move made after the history is recognisable in the label's history:
        # done already if the label reached that version after the last publish
        if not any(h.get("version") == m.number and parse_time(h["moved_at"]) > history_end for h in pasts[i]):
            await client.move_label(m.pri, m.label, m.number)
    return await _read_back(client, plan, held, already_published=not todo)


async def _publish_steps(client: _Client, todo: list[Step], held: dict[str, list[dict[str, Any]]]) -> None:
    """Publish ``todo``: each product's versions in order, products side by side.

    A step waits for the steps publishing its dependencies. Dependencies are
    strictly older than their dependents and each product's steps are in time
    order, so every wait is for an earlier time: no cycle.
    """
    done = {s.ref: trio.Event() for s in todo}
    by_product: dict[str, list[Step]] = {}
    for s in todo:
        by_product.setdefault(s.pri, []).append(s)

    async def one_product(steps: list[Step]) -> None:
        for s in steps:
            for dep in s.dependencies:
                if dep in done:
                    await done[dep].wait()
            async with limit:
                version = await client.publish_directory(
                    s.pri, s.directory, dependencies=list(s.dependencies), labels=list(s.labels),
                    message=s.message, at=s.at,
                )
            if int(version["number"]) != s.number:
                raise DemoError(f"published {s.pri} as version {version['number']}, expected {s.number}")
            held[s.pri].append(version)
            done[s.ref].set()

    # every product task runs at once (one waiting for a dependency must not hold
    # a slot its dependency needs); the limit is on publishes in flight
    limit = trio.CapacityLimiter(_PUBLISH_CONCURRENCY)
    await _gather(((pri, lambda steps=steps: one_product(steps)) for pri, steps in by_product.items()),
                  concurrency=None)


async def _read_back(
    client: _Client, plan: DemoPlan, held: Mapping[str, list[dict[str, Any]]], *, already_published: bool
) -> DemoShow:
    products: dict[str, ProductRecord] = {}
    for pri, p in plan.products.items():
        if not held[pri]:
            continue  # not on the service (yet): not part of what it holds
        versions: dict[int, VersionRecord] = {}
        for raw in held[pri]:
            planned = p.versions[int(raw["number"])]
            versions[planned.number] = VersionRecord(
                pri=pri, number=planned.number, created_at=parse_time(raw["created_at"]),
                dependencies=planned.dependencies, labels=planned.labels, message=planned.message,
                files=planned.files, arcs=planned.arcs, values=planned.values, variants=planned.variants,
            )
        products[pri] = ProductRecord(pri, p.kind, p.layer, p.doc, versions)
    publish_times = {(pri, v.number): v.created_at for pri, p in products.items() for v in p.versions.values()}
    moves: list[tuple[dt.datetime, int, LabelMove]] = []
    used = sorted({(m.pri, m.label) for m in plan.label_moves if m.pri in products})
    histories = await _gather((key, lambda k=key: _label_history(client, *k)) for key in used)
    for pri, label in used:
        for i, h in enumerate(histories[(pri, label)]):
            at = parse_time(h["moved_at"])
            number = h.get("version")
            after = publish_times.get((pri, number)) != at if number is not None else True
            moves.append((at, i, LabelMove(pri, label, number, at, after_history=after)))
    moves.sort(key=lambda t: (t[0], t[2].pri, t[2].label, t[1]))
    first = plan.steps[0]
    start = plan.start
    if first.pri in products:
        start = products[first.pri].versions[first.number].created_at - (first.at - plan.start)
    return DemoShow(url=getattr(client, "url", None), already_published=already_published, start=start,
                    scale=plan.scale, mount_root=plan.mount_root, products=products,
                    label_moves=[m for _, _, m in moves])
