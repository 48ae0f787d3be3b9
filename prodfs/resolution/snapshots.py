"""Snapshots: a resolution frozen for render nodes (filling a cache ahead of a job is `prodfs.storage.prefetch`).

A snapshot record (stored by PVC, which names it by a hash of its content)::

    {"format": 1,
     "context": {... the context, with "pin" always set ...},
     "choices": {"spies:asset:walter-model": 2, ...},   # every product of the graph
     "unresolved": {"spies:...": "why"},                # strict conflicts, errors
     "source": {"workspace": "spies-lgt" | null}}

A mount of it serves exactly ``choices``; any other product resolves as of
the pin by the context's label preference, then the newest version. Nothing
in the record depends on when or where it was made, so the same resolution
always gives the same id.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from pvc_client import PVCClient, format_time, from_micros, to_micros, utcnow

from .context import Context
from .graph import Graph
from .resolver import Resolution, resolve

log = logging.getLogger(__name__)

__all__ = ["snapshot_record", "create_snapshot", "load_closure", "load_graph", "snapshot_workspace"]

FORMAT = 1


def snapshot_record(resolution: Resolution, context: Context, *, extra_names: dict[str, int] | None = None,
                    workspace: str | None = None) -> dict[str, Any]:
    """Freeze a resolution. ``context.pin_us`` must be set (the caller pins a live context to now)."""
    if context.pin_us is None:
        raise ValueError("a snapshot needs a pinned context")
    choices: dict[str, int] = {}
    unresolved: dict[str, str] = {}
    for pri, choice in sorted(resolution.choices.items()):
        if choice.number is None:
            unresolved[pri] = choice.conflict.message if choice.conflict else choice.rule
        else:
            choices[pri] = choice.number
    for pri, number in (extra_names or {}).items():
        choices.setdefault(pri, number)
    ctx = context.replace(workspace=None, snapshot=None).to_json()
    return {"format": FORMAT, "context": ctx, "choices": choices, "unresolved": unresolved,
            "source": {"workspace": workspace}}


async def load_closure(client: PVCClient, names: Iterable[str], pin_us: int | None, *,
                       skip: Collection[str] = ()) -> dict:
    """The Graph answer of the closure of ``names`` (roots, overrides: any ``PRI[@N|@label]``) as of a pin.

    Unknown names are no error: the resolver reports a root it cannot find.
    ``skip``: products (canonical names) already held with their closure.
    """
    as_of = format_time(from_micros(pin_us)) if pin_us is not None else None
    wanted = [n for n in dict.fromkeys(names) if n.split("@", 1)[0] not in skip]
    return await client.closure(wanted, as_of=as_of, missing="omit")


async def load_graph(client: PVCClient, context: Context, *, also: Iterable[str] = ()) -> Graph:
    """What resolving ``context`` needs: the closure of its roots and overrides (and of ``also``)."""
    return Graph.from_json(await load_closure(client, [*context.roots, *context.overrides, *also], context.pin_us))


async def create_snapshot(client: PVCClient, context: Context, *, workspace: str | None = None,
                          extra_names: dict[str, int] | None = None) -> dict:
    """Resolve ``context`` (pinned to now when live) and store the snapshot; return PVC's answer."""
    if context.pin_us is None:
        context = context.replace(pin_us=to_micros(utcnow()))
    graph = await load_graph(client, context)
    resolution = resolve(graph, context)
    record = snapshot_record(resolution, context, extra_names=extra_names, workspace=workspace)
    return await client.create_snapshot(record)


async def snapshot_workspace(client: PVCClient, name: str) -> dict:
    """Freeze the workspace ``name``'s current resolution (``pvc snapshot create --workspace``)."""
    workspace = await client.get_workspace(name)
    return await create_snapshot(client, Context.from_workspace(workspace), workspace=name)
