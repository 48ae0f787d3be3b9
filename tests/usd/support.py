"""What the USD tests do again and again: open stages, read what they composed, compare them.

Everything here opens layers the way a DCC does (``Usd.Stage.Open`` on a
path, USD's own resolver and file formats); nothing reads a layer's text
itself except to check a file's format header.

A stage keeps its layers open (a ``.usdc`` layer keeps its file mapped), and
a mount with an open file cannot be unmounted: callers let stages die before
the mount does (locals of a test, never fixtures that outlive the mount).
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prodfs_demo import Value, stage_value
from pvc_client import cli as pvc_cli
from tests.support.mount import Mount, mounted

__all__ = [
    "TEX", "MODEL", "RIG", "LOOK", "LAY", "ANIM", "LGT", "open_stage", "composed", "flat_text",
    "used_products", "resolved_refs", "materialize", "problems_in_new_process", "mapped_paths", "mounted_together",
    "release_stages",
]

TEX = "spies:asset:walter-tex"
MODEL = "spies:asset:walter-model"
RIG = "spies:asset:walter-rig"
LOOK = "spies:asset:walter-look"
LAY = "spies:100:10-lay:main"
ANIM = "spies:100:10-anim:walter"
LGT = "spies:100:10-lgt:walter"

LAYER = {TEX: "tex.usda", MODEL: "model.usdc", RIG: "rig.usda", LOOK: "look.usda", LAY: "layout.usda",
         ANIM: "anim.usda", LGT: "walter.usda"}


def open_stage(path: Path) -> Any:  # a pxr Usd.Stage
    """``Usd.Stage.Open`` as usdview or a DCC's "open" does: every payload loaded."""
    from pxr import Usd

    stage = Usd.Stage.Open(str(path), Usd.Stage.LoadAll)
    assert stage is not None, f"{path}: USD could not open the layer"
    return stage


def composed(stage: Any, keys: Iterable[str]) -> dict[str, Value]:
    """What ``stage`` composes for expectation keys (``/prim.attr``, ``/prim``, ``/prim{set}``)."""
    return {key: stage_value(stage, key) for key in keys}


def flat_text(stage: Any, roots: Iterable[Path]) -> str:
    """The stage flattened to one layer's text, with each of ``roots`` spelled ``<ROOT>``.

    Flattening anchors every asset path (the textures) to the layer that
    authored it, so the text holds absolute paths, and its header names the
    root layer's path. Those spell the directory the products sit in: the
    mountpoint for a mount, the materialization root for ``pvc get``. That
    prefix is the only legitimate difference between two stages composed from
    the same versions; everything else (values, prims, variant selections,
    the versionless product names under the prefix) must match byte for byte.
    """
    text = stage.Flatten().ExportToString()
    # longest first: one root may be a prefix of another
    for root in sorted({str(r) for r in roots}, key=len, reverse=True):
        text = text.replace(root + "/", "<ROOT>/")
    return text


def used_products(stage: Any, root: Path) -> dict[str, str]:
    """``{name: layer path under name}`` for every layer the stage used from under ``root``.

    ``name`` is the top directory as the layer was reached (``PRI``, ``PRI@N``).
    """
    out: dict[str, str] = {}
    for layer in stage.GetUsedLayers():
        if layer.anonymous or not layer.realPath:
            continue
        path = Path(layer.realPath)
        if path.is_relative_to(root):
            name, *rest = path.relative_to(root).parts
            out[name] = "/".join(rest)
    return out


def resolved_refs(mount: Mount) -> dict[str, str]:
    """``{name: PRI@N}``: what each versionless or label name of the mount resolved to."""
    return {r["name"]: r["ref"] for r in mount.control("resolved.json")["resolved"]}


def materialize(url: str, refs: Iterable[str], root: Path) -> Path:
    """``pvc get REF ROOT/<PRI>`` for every ``PRI@N``: the products side by side, as a mount lays them out."""
    root.mkdir(parents=True, exist_ok=True)
    for ref in refs:
        pri = ref.rpartition("@")[0]
        code = pvc_cli.main(["get", ref, str(root / pri), "--url", url])
        assert code == 0, f"pvc get {ref} exited {code}"
    return root


# A DCC started afresh: its own USD layer registry, nothing cached from before.
_FRESH_OPEN = """
import json, sys
from pxr import Usd
from prodfs_demo import check_stage
stage = Usd.Stage.Open(sys.argv[1], Usd.Stage.LoadAll)
if stage is None:
    sys.exit("the layer did not open")
print(json.dumps(check_stage(stage, json.loads(sys.argv[2]))))
"""


def problems_in_new_process(path: Path, expected: Mapping[str, Value]) -> list[str]:
    """Open ``path`` in a new Python process; `check_stage` it there against ``expected``."""
    res = subprocess.run([sys.executable, "-c", _FRESH_OPEN, str(path), json.dumps(dict(expected))],
                         capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def release_stages() -> None:
    """Let stages a failed test left behind die, so that the mounts they read can be unmounted.

    pytest keeps the last failure's traceback (``sys.last_traceback``) and
    with it the failed test's locals: its stages, whose layers keep files of
    the mount open. Without this, one failure would also fail every
    unmount after it ("Device or resource busy").
    """
    sys.last_type = sys.last_value = sys.last_traceback = None
    if hasattr(sys, "last_exc"):  # Python 3.12 and later keep it here too
        sys.last_exc = None
    gc.collect()


def mapped_paths(under: Path) -> set[str]:
    """Files under ``under`` that this process has memory-mapped (from /proc/self/maps)."""
    prefix = str(under) + "/"
    out = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].rstrip("\n").startswith(prefix):
                out.add(parts[5].rstrip("\n"))
    return out



@contextlib.contextmanager
def mounted_together(
    tmp_path: Path, pvc_url: str, contexts: Mapping[str, Sequence[str]],
    allow_log: Mapping[str, re.Pattern[str]] | None = None,
) -> Iterator[dict[str, Mount]]:
    """``mounted`` for several contexts at once: ``{name: mount args}`` -> ``{name: Mount}``.

    Starting a mount is mostly two Python start-ups (``prodfs`` and its
    daemon); side by side they cost about as much as one, which is what keeps
    a test of every strategy short. Each mount still has its own log, checked
    at the end as ``mounted`` does.
    """
    managers = {name: mounted(tmp_path, pvc_url, *args, name=name, allow_log=(allow_log or {}).get(name))
                for name, args in contexts.items()}
    with ThreadPoolExecutor(max_workers=len(managers)) as pool:
        starts = {name: pool.submit(cm.__enter__) for name, cm in managers.items()}
        mounts: dict[str, Mount] = {}
        failures: list[BaseException] = []
        for name, started in starts.items():
            try:
                mounts[name] = started.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others are unmounted
                failures.append(exc)
        try:
            if failures:
                raise failures[0]
            yield mounts
        finally:
            release_stages()
            stops = [pool.submit(managers[name].__exit__, None, None, None) for name in mounts]
            for stopped in stops:
                stopped.result()  # the first unmount or daemon-log failure fails the test
