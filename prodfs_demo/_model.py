"""What the demo published, and what a stage must compose in a given context.

A `Show` is plain data (loadable from its JSON form) plus the rules that turn
it into expectations:

- a *selection* maps every visible product to the version a context shows:
  ``selection(as_of=T)`` is what a mount pinned at T serves for versionless
  paths (the newest version created at or before T), ``selection()`` is
  "newest everything", ``selection(prefer=("approved", "published"))`` takes
  the first of those labels a product carries, else its newest version;
- ``compose(pri, selection)`` is what opening that product's layer composes
  when every versionless path resolves as the selection says;
- ``deps_selection(pri, n)`` is the context of a version's own dependencies:
  the transitive closure of its ``PRI@N`` dependencies, where a diamond (two
  versions of one product reached along different paths) resolves to the
  highest number; ``expected[pri][n]`` composes ``pri@n`` in that context.

Values in expectations: ``/prim.attr`` -> the attribute's value (floats,
ints, strings, lists for vectors; asset paths as authored; None: no value),
``/prim`` -> whether the prim exists, ``/prim{set}`` -> the variant selected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pvc_client import format_time, parse_time

from ._layers import Value

__all__ = ["FileRecord", "VersionRecord", "ProductRecord", "LabelMove", "Show", "is_probe", "FORMAT"]

FORMAT = 1  # version of the JSON form
DAY = dt.timedelta(days=1)
PREFER = ("approved", "published")


def is_probe(key: str) -> bool:
    """A key naming a prim (existence), not an attribute or a variant selection."""
    return "{" not in key and "." not in key.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class FileRecord:
    path: str  # relative to the version's top directory
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(slots=True)
class VersionRecord:
    pri: str
    number: int
    created_at: dt.datetime
    dependencies: tuple[str, ...]
    labels: tuple[str, ...]  # set by the publish itself
    message: str
    files: tuple[FileRecord, ...]
    arcs: tuple[str, ...]  # products the layer points at (sublayers, references), strongest first
    values: dict[str, Value]  # what this version's layer alone says
    variants: dict[str, dict[str, dict[str, Value]]] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.pri}@{self.number}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref, "number": self.number, "created_at": format_time(self.created_at),
            "dependencies": list(self.dependencies), "labels": list(self.labels), "message": self.message,
            "files": [f.to_json() for f in self.files], "arcs": list(self.arcs),
            "values": self.values, "variants": self.variants,
        }

    @classmethod
    def from_json(cls, pri: str, raw: Mapping[str, Any]) -> VersionRecord:
        return cls(
            pri=pri, number=int(raw["number"]), created_at=parse_time(raw["created_at"]),
            dependencies=tuple(raw.get("dependencies", ())), labels=tuple(raw.get("labels", ())),
            message=str(raw.get("message", "")),
            files=tuple(FileRecord(f["path"], int(f["size"]), f["sha256"]) for f in raw.get("files", ())),
            arcs=tuple(raw.get("arcs", ())), values=dict(raw.get("values", {})),
            variants={k: dict(v) for k, v in raw.get("variants", {}).items()},
        )


@dataclass(slots=True)
class ProductRecord:
    pri: str
    kind: str  # "asset" or "shot"
    layer: str  # the layer file at the top of every version
    doc: str
    versions: dict[int, VersionRecord]


@dataclass(slots=True)
class LabelMove:
    """A label put on a version: by a publish (``at`` = the version's time) or
    afterwards (``after_history``; ``at`` is None until the service says when).
    ``number`` None is a removal."""

    pri: str
    label: str
    number: int | None
    at: dt.datetime | None
    after_history: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"pri": self.pri, "label": self.label, "number": self.number,
                "at": None if self.at is None else format_time(self.at), "after_history": self.after_history}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LabelMove:
        at = raw.get("at")
        number = raw.get("number")
        return cls(raw["pri"], raw["label"], None if number is None else int(number),
                   None if at is None else parse_time(at),
                   bool(raw.get("after_history", False)))


def _time_arg(value: str | dt.datetime | None) -> dt.datetime | None:
    return None if value is None else parse_time(value)


class Show:
    """The products and label history of a demo show, and the expectations they imply."""

    def __init__(
        self,
        *,
        start: dt.datetime,
        scale: int,
        mount_root: str | None,
        products: Mapping[str, ProductRecord],
        label_moves: Iterable[LabelMove],
    ) -> None:
        self.start = parse_time(start)
        self.scale = scale
        self.mount_root = mount_root
        self.products: dict[str, ProductRecord] = dict(products)
        self.label_moves: list[LabelMove] = list(label_moves)

    # -- history ---------------------------------------------------------------------------

    def versions(self) -> Iterator[VersionRecord]:
        """Every version, oldest first (ties by PRI then number)."""
        every = [v for p in self.products.values() for v in p.versions.values()]
        return iter(sorted(every, key=lambda v: (v.created_at, v.pri, v.number)))

    def labels(self, as_of: str | dt.datetime | None = None) -> dict[str, dict[str, int]]:
        """Label positions as of a time; None = now (moves made after the history included)."""
        when = _time_arg(as_of)
        state: dict[str, dict[str, int]] = {}
        for m in self.label_moves:
            if when is not None and (m.at is None or m.at > when):
                continue
            if m.number is None:
                state.get(m.pri, {}).pop(m.label, None)
            else:
                state.setdefault(m.pri, {})[m.label] = m.number
        return {pri: labels for pri, labels in state.items() if labels}

    def selection(
        self, as_of: str | dt.datetime | None = None, prefer: Iterable[str] = ()
    ) -> dict[str, int]:
        """The version of every product visible at ``as_of`` a mount would show (see module doc)."""
        when = _time_arg(as_of)
        prefer = tuple(prefer)
        labels = self.labels(as_of) if prefer else {}
        out: dict[str, int] = {}
        for p in self.products.values():
            visible = {n for n, v in p.versions.items() if when is None or v.created_at <= when}
            if not visible:
                continue
            chosen = max(visible)
            for label in prefer:
                n = labels.get(p.pri, {}).get(label)
                if n in visible:
                    chosen = n
                    break
            out[p.pri] = chosen
        return out

    def deps_selection(self, pri: str, number: int) -> dict[str, int]:
        """``pri@number`` and the transitive closure of its dependencies; a diamond takes the highest."""
        out: dict[str, int] = {}
        seen: set[tuple[str, int]] = set()
        todo = [(pri, number)]
        while todo:
            p, n = todo.pop()
            if (p, n) in seen:
                continue
            seen.add((p, n))
            out[p] = max(out.get(p, 0), n)
            for dep in self._version(p, n).dependencies:
                d, _, k = dep.rpartition("@")
                todo.append((d, int(k)))
        return out

    def diamonds(self) -> list[dict[str, Any]]:
        """Versions whose dependency closure reaches one product at two versions."""
        found = []
        for v in self.versions():
            reached: dict[str, set[int]] = {}
            todo, seen = [(v.pri, v.number)], set()
            while todo:
                p, n = todo.pop()
                if (p, n) in seen:
                    continue
                seen.add((p, n))
                reached.setdefault(p, set()).add(n)
                for dep in self._version(p, n).dependencies:
                    d, _, k = dep.rpartition("@")
                    todo.append((d, int(k)))
            for p, ns in sorted(reached.items()):
                if len(ns) > 1:
                    found.append({"version": v.ref, "product": p, "numbers": sorted(ns)})
        return found

    # -- composition -----------------------------------------------------------------------

    def compose(self, pri: str, selection: Mapping[str, int]) -> dict[str, Value]:
        """The values a stage on ``pri``'s layer composes when versionless paths follow ``selection``."""
        order: list[VersionRecord] = []
        seen: set[str] = set()

        def visit(p: str) -> None:
            if p in seen:
                return
            seen.add(p)
            if p not in selection:
                raise ValueError(f"{p} (reached from {pri}) is not in the selection")
            v = self._version(p, selection[p])
            order.append(v)
            for arc in v.arcs:
                visit(arc)

        visit(pri)
        # The demo's products author disjoint keys except for deliberate overrides
        # (lighting's variant selection), so "strongest opinion wins" over the
        # arcs in strength order is exactly what USD composes here.
        out: dict[str, Value] = {}
        probes: dict[str, bool] = {}
        for v in order:
            for key, value in v.values.items():
                if is_probe(key):
                    probes[key] = probes.get(key, False) or bool(value)
                elif value is not None:
                    out.setdefault(key, value)
        for v in order:
            for key, variants in v.variants.items():
                chosen = out.get(key)
                if isinstance(chosen, str):
                    for k, value in variants.get(chosen, {}).items():
                        out.setdefault(k, value)
        for v in order:
            for key, value in v.values.items():
                if value is None:
                    out.setdefault(key, None)
        out.update(probes)
        return dict(sorted(out.items()))

    @cached_property
    def expected(self) -> dict[str, dict[int, dict[str, Value]]]:
        """``expected[pri][n]``: ``pri@n`` composed with its own dependencies (`deps_selection`)."""
        return {
            p.pri: {n: self.compose(p.pri, self.deps_selection(p.pri, n)) for n in sorted(p.versions)}
            for p in self.products.values()
        }

    def expected_in(
        self, as_of: str | dt.datetime | None = None, prefer: Iterable[str] = ()
    ) -> dict[str, dict[str, Value]]:
        """Every visible product's layer composed in the context (as_of, prefer)."""
        sel = self.selection(as_of, prefer)
        return {p: self.compose(p, sel) for p in sel}

    # -- contexts --------------------------------------------------------------------------

    def pins(self) -> dict[str, dt.datetime]:
        """``day0``, ``day1``...: the last instant of each day of the history (from ``start``).

        When ``start`` is midnight UTC, ``dayN`` is what a pin to the bare date
        ``YYYY-MM-DD`` of that day means.
        """
        last = max((v.created_at for v in self.versions()), default=self.start)
        days = (last - self.start) // DAY + 1
        return {f"day{d}": self.start + (d + 1) * DAY - dt.timedelta(microseconds=1) for d in range(days)}

    def contexts(self) -> dict[str, dict[str, Any]]:
        """Named contexts with their selection and expectations, for the JSON form."""
        named: list[tuple[str, dt.datetime | None, tuple[str, ...]]] = [("latest", None, ())]
        named += [(name, at, ()) for name, at in self.pins().items()]
        named.append(("prefer-approved", None, PREFER))
        out: dict[str, dict[str, Any]] = {}
        for name, at, prefer in named:
            sel = self.selection(at, prefer)
            out[name] = {
                "as_of": None if at is None else format_time(at),
                "date": None if at is None else at.date().isoformat(),
                "prefer": list(prefer),
                "selection": sel,
                "labels": self.labels(at),
                "expected": {p: self.compose(p, sel) for p in sel},
            }
        return out

    # -- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable description (``json.dumps`` it); `from_json` reads it back."""
        return {
            "format": FORMAT,
            "show": "spies",
            "start": format_time(self.start),
            "scale": self.scale,
            "mount_root": self.mount_root,
            "products": {
                p.pri: {
                    "kind": p.kind, "layer": p.layer, "doc": p.doc,
                    "versions": {
                        str(n): {**v.to_json(), "expected": self.expected[p.pri][n]}
                        for n, v in sorted(p.versions.items())
                    },
                }
                for p in self.products.values()
            },
            "label_moves": [m.to_json() for m in self.label_moves],
            "labels": self.labels(),
            "diamonds": self.diamonds(),
            "pins": {name: format_time(at) for name, at in self.pins().items()},
            "contexts": self.contexts(),
        }

    @staticmethod
    def _parts(raw: Mapping[str, Any]) -> dict[str, Any]:
        if raw.get("format") != FORMAT:
            raise ValueError(f"not a demo show description of format {FORMAT}: format={raw.get('format')!r}")
        products = {
            pri: ProductRecord(
                pri, p["kind"], p["layer"], p.get("doc", ""),
                {int(n): VersionRecord.from_json(pri, v) for n, v in p["versions"].items()},
            )
            for pri, p in raw["products"].items()
        }
        return {
            "start": parse_time(raw["start"]), "scale": int(raw["scale"]), "mount_root": raw.get("mount_root"),
            "products": products, "label_moves": [LabelMove.from_json(m) for m in raw.get("label_moves", ())],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Show:
        return cls(**cls._parts(raw))

    # -- helpers ---------------------------------------------------------------------------

    def _version(self, pri: str, number: int) -> VersionRecord:
        try:
            return self.products[pri].versions[number]
        except KeyError:
            raise ValueError(f"{pri}@{number} is not part of the demo show") from None
