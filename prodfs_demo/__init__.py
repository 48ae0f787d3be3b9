"""The demo show: a small USD production (``spies``) published to PVC.

``build`` writes every version of every product to disk and returns a
`DemoPlan` (the ordered publish steps and the expected composed values);
``publish`` sends it to a service once and returns a `DemoShow` (the same
expectations, with the service's times), which the tests and the benchmarks
load from JSON. ``check_stage`` compares a composed stage with expectations.
See docs/demo.md for the show's content, version by version.
"""

from __future__ import annotations

import datetime as dt

from ._build import DemoPlan, Step, build, texture_bytes
from ._check import check_stage, stage_value, values_equal
from ._layers import Value
from ._model import FileRecord, LabelMove, ProductRecord, Show, VersionRecord, is_probe
from ._publish import DemoError, DemoShow, publish
from ._show import HISTORY_DAYS, shot_entity

__all__ = [
    "DemoPlan", "Step", "build", "texture_bytes", "check_stage", "stage_value", "values_equal", "Value",
    "FileRecord", "LabelMove", "ProductRecord", "Show", "VersionRecord", "is_probe", "DemoError",
    "DemoShow", "publish", "HISTORY_DAYS", "shot_entity", "default_start",
]


def default_start() -> dt.datetime:
    """Midnight UTC ten days ago: the whole history is in the past and ``dayN`` pins are calendar days."""
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=10)
