"""Resolution: which version each product name means in a context.

Owns the product graph (`graph`), resolution contexts (`context`), the
resolver (`resolver` is its public face; `_resolve`, `_cycles` and `_records`
its engine), the strategies (`strategies`, also the plugin API) and snapshot
records (`snapshots`). Plain classes over `pvc_client` only: nothing here
knows of caches, FUSE or the kernel, so all of it runs in a test process.
"""

from __future__ import annotations

from .context import DEFAULT_STRATEGY, Context
from .graph import Dep, Graph, ProductInfo, VersionInfo, product_from_json
from .resolver import Choice, Conflict, Request, Resolution, diff, resolve, resolve_since
from .snapshots import create_snapshot, load_closure, load_graph, snapshot_record, snapshot_workspace
from .strategies import ChoiceEnv, Strategy, UnknownStrategy, available, get_strategy, preferred_version, register

__all__ = [
    "DEFAULT_STRATEGY", "Context",
    "Dep", "Graph", "ProductInfo", "VersionInfo", "product_from_json",
    "Choice", "Conflict", "Request", "Resolution", "diff", "resolve", "resolve_since",
    "create_snapshot", "load_closure", "load_graph", "snapshot_record", "snapshot_workspace",
    "ChoiceEnv", "Strategy", "UnknownStrategy", "available", "get_strategy", "preferred_version", "register",
]
