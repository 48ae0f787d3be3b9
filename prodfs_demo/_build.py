"""Write every version of the demo show to disk and plan its publication.

``WORKDIR/<PRI>/<N>/`` holds version N of a product exactly as it will be
published: its layer at the top, textures under ``textures/``. Nothing here
touches the network; the same inputs always give the same bytes and the same
plan (times come from ``start``, never from the clock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc_client import format_time, parse_time, parse_pri

from ._layers import own_values, variant_values, write_layer
from ._model import FileRecord, LabelMove, ProductRecord, Show, VersionRecord
from ._show import ProductDef, define_show

__all__ = ["Step", "DemoPlan", "build", "texture_bytes"]

TEXTURE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Step:
    """One publish: ``client.publish_directory(pri, directory, dependencies=..., ...)``."""

    pri: str
    number: int  # the number the service will give it (versions are published in order)
    directory: Path
    dependencies: tuple[str, ...]
    labels: tuple[str, ...]
    message: str
    at: dt.datetime

    @property
    def ref(self) -> str:
        return f"{self.pri}@{self.number}"

    def to_json(self) -> dict[str, Any]:
        return {"pri": self.pri, "number": self.number, "directory": str(self.directory),
                "dependencies": list(self.dependencies), "labels": list(self.labels),
                "message": self.message, "at": format_time(self.at)}


class DemoPlan(Show):
    """A built show: the expectations (see `Show`) plus the ordered publish steps."""

    def __init__(self, *, workdir: Path, steps: list[Step], **show: Any) -> None:
        super().__init__(**show)
        self.workdir = workdir
        self.steps = steps

    @property
    def moves(self) -> list[LabelMove]:
        """Label moves to make once every step is published (``client.move_label``)."""
        return [m for m in self.label_moves if m.after_history]

    def directory(self, pri: str, number: int) -> Path:
        return self.workdir / pri / str(number)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "workdir": str(self.workdir), "steps": [s.to_json() for s in self.steps]}


def texture_bytes(pri: str, number: int, name: str, size: int = TEXTURE_SIZE) -> bytes:
    """Deterministic stand-in for an image: a PNG signature, a readable header, filler.

    The normal map does not change between versions, so its bytes do not
    depend on the version: the store keeps one blob for both.
    """
    owner = pri if name == "walter_normal.png" else f"{pri}@{number}"
    head = b"\x89PNG\r\n\x1a\n" + f"prodfs demo texture {owner} {name}\n".encode()
    return head + hashlib.shake_256(head).digest(max(0, size - len(head)))


def _files(top: Path) -> tuple[FileRecord, ...]:
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath, name)
            data = full.read_bytes()
            out.append(FileRecord(full.relative_to(top).as_posix(), len(data), hashlib.sha256(data).hexdigest()))
    return tuple(sorted(out, key=lambda f: f.path))


def _fix_modes(top: Path) -> None:
    # Modes are part of a manifest: make them independent of the umask.
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(Path(dirpath, name), 0o644)


def _check_history(products: list[ProductDef], start: dt.datetime) -> None:
    at = {(p.pri, v.number): start + v.offset for p in products for v in p.versions}
    for p in products:
        times = [start + v.offset for v in p.versions]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise RuntimeError(f"{p.pri}: version times must strictly increase")
        for v in p.versions:
            for dep in v.dependencies:
                d, _, n = dep.rpartition("@")
                if at[(d, int(n))] >= at[(p.pri, v.number)]:
                    raise RuntimeError(f"{p.pri}@{v.number}: dependency {dep} is not older")


def build(
    workdir: Path | str, *, start: dt.datetime, scale: int = 1, mount_root: str | None = None
) -> DemoPlan:
    """Write every version under ``workdir`` and return the plan (steps, expectations).

    ``start`` (an aware datetime) is the beginning of the eight-day history;
    publishing needs it at least eight days in the past. ``mount_root``
    switches cross-product paths from ``../PRI/layer`` to absolute
    ``MOUNT_ROOT/PRI/layer``.
    """
    if not isinstance(start, dt.datetime) or start.tzinfo is None:
        raise ValueError("start must be a timezone-aware datetime")
    start = parse_time(start)
    if mount_root is not None:
        if not mount_root.startswith("/"):
            raise ValueError(f"mount_root must be an absolute path, not {mount_root!r}")
        mount_root = mount_root.rstrip("/") or "/"
    workdir = Path(workdir).absolute()
    products, moves = define_show(scale)
    _check_history(products, start)
    layer_file = {p.pri: p.layer_file for p in products}

    def asset_path(pri: str) -> str:
        parse_pri(pri)
        if mount_root is None:
            return f"../{pri}/{layer_file[pri]}"
        return f"{mount_root.rstrip('/')}/{pri}/{layer_file[pri]}"

    records: dict[str, ProductRecord] = {}
    steps: list[Step] = []
    label_moves: list[LabelMove] = []
    for p in products:
        versions: dict[int, VersionRecord] = {}
        for v in p.versions:
            top = workdir / p.pri / str(v.number)
            if top.exists():
                shutil.rmtree(top)
            top.mkdir(parents=True)
            write_layer(v.layer, top / p.layer_file, asset_path)
            for name in v.textures:
                (top / "textures").mkdir(exist_ok=True)
                (top / "textures" / name).write_bytes(texture_bytes(p.pri, v.number, name))
            _fix_modes(top)
            at = start + v.offset
            versions[v.number] = VersionRecord(
                pri=p.pri, number=v.number, created_at=at, dependencies=v.dependencies, labels=v.labels,
                message=v.message, files=_files(top), arcs=v.layer.arcs, values=own_values(v.layer),
                variants=variant_values(v.layer),
            )
            steps.append(Step(p.pri, v.number, top, v.dependencies, v.labels, v.message, at))
        records[p.pri] = ProductRecord(p.pri, p.kind, p.layer_file, p.doc, versions)
    steps.sort(key=lambda s: (s.at, s.pri, s.number))
    for s in steps:
        label_moves += [LabelMove(s.pri, label, s.number, s.at) for label in s.labels]
    label_moves += [LabelMove(m.pri, m.label, m.number, None, after_history=True) for m in moves]
    return DemoPlan(workdir=workdir, steps=steps, start=start, scale=scale, mount_root=mount_root,
                    products=records, label_moves=label_moves)
