"""Compare a composed USD stage with the demo's expectations.

Used by the tests (through a mount or a directory arranged like one) and by
the benchmarks; it reports every difference instead of stopping at the first,
so a failure says what composed wrongly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._layers import Value
from ._model import is_probe

__all__ = ["stage_value", "check_stage", "values_equal"]


def _plain(value: Any) -> Value:
    """A pxr value in the JSON-friendly form expectations use."""
    from pxr import Sdf

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Sdf.AssetPath):
        return value.path
    try:
        return [_plain(x) for x in value]  # Gf vectors, Vt arrays
    except TypeError:
        return str(value)


def stage_value(stage: Any, key: str) -> Value:
    """What ``stage`` composes for an expectation key (see `prodfs_demo.Show`)."""
    from pxr import Sdf

    if key.endswith("}"):
        prim_path, _, vset = key[:-1].partition("{")
        prim = stage.GetPrimAtPath(prim_path)
        if not prim.IsValid():
            return None
        return prim.GetVariantSets().GetVariantSelection(vset) or None
    if is_probe(key):
        prim = stage.GetPrimAtPath(key)
        return bool(prim.IsValid() and prim.IsDefined() and prim.IsActive())
    path = Sdf.Path(key)
    prim = stage.GetPrimAtPath(path.GetPrimPath())
    if not prim.IsValid():
        return None
    attr = prim.GetAttribute(path.name)
    if not attr.IsValid():
        return None
    return _plain(attr.Get())


def values_equal(got: Value, want: Value, rel_tol: float = 1e-5) -> bool:
    # float32 attributes come back as 0.800000011920929 for 0.8
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=rel_tol, abs_tol=1e-9)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(values_equal(g, w, rel_tol) for g, w in zip(got, want))
    return got == want


def check_stage(stage: Any, expected: Mapping[str, Value], *, resolve_assets: bool = True) -> list[str]:
    """Every difference between ``stage`` and ``expected``, as readable lines (empty: all match).

    Composition errors (a reference or sublayer that did not resolve) are
    differences too. With ``resolve_assets``, an asset path that composes as
    expected but does not resolve to a file is one as well.
    """
    from pxr import Sdf

    problems = [f"composition error: {e}" for e in stage.GetCompositionErrors()]
    for key, want in expected.items():
        got = stage_value(stage, key)
        if not values_equal(got, want):
            problems.append(f"{key}: composed {got!r}, expected {want!r}")
            continue
        if resolve_assets and isinstance(want, str) and not key.endswith("}") and not is_probe(key):
            path = Sdf.Path(key)
            attr = stage.GetPrimAtPath(path.GetPrimPath()).GetAttribute(path.name)
            value = attr.Get()
            if isinstance(value, Sdf.AssetPath) and not value.resolvedPath:
                problems.append(f"{key}: asset {value.path!r} does not resolve")
    return problems
