"""The records a resolution is made of: requests, conflicts, choices.

Frozen, slotted dataclasses with a fast constructor; see `prodfs.resolution.resolver`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, TypeVar

__all__ = ["Request", "Conflict", "Choice", "sort_key"]

_T = TypeVar("_T")


def _direct_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that writes its slots directly.

    The generated one goes through ``object.__setattr__`` for every field
    (the class forbids plain assignment), which measured about five times
    slower; a resolution builds a `Request` per dependency followed and a
    `Choice` per product (bench/bench_resolver.py). Same signature, same
    defaults; instances stay frozen.
    """
    names: dict[str, Any] = {}
    params = []
    body = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), names)  # noqa: S102 - fixed text
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


@_direct_init
@dataclass(frozen=True, slots=True)
class Request:
    """A version of a product asked for in the graph.

    ``dependent`` is ``PRI@N`` of the chosen version that asked, or None for a
    root. ``hops`` is the length of the path from a root to the requested
    product through that dependent (0 for a root); ``root`` is the index in the
    context's roots of the root that path starts from (the earliest one when
    several are equally near).
    """

    pri: str
    number: int
    dependent: str | None
    hops: int
    root: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"pri": self.pri, "number": self.number, "dependent": self.dependent,
                "hops": self.hops, "root": self.root}


@_direct_init
@dataclass(frozen=True, slots=True)
class Conflict:
    """Dependents (or roots) that disagree on a product, and what was done."""

    pri: str
    requests: tuple[Request, ...]
    chosen: int | None
    strategy: str  # the strategy name, or "root"/"override" when those decided
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"pri": self.pri, "requests": [r.to_json() for r in self.requests],
                "chosen": self.chosen, "strategy": self.strategy, "message": self.message}


@_direct_init
@dataclass(frozen=True, slots=True)
class Choice:
    """The version a product resolves to, with everything needed to explain it.

    ``rule`` is one of ``override``, ``root``, ``root-label:NAME``,
    ``strategy:NAME``, ``preference:LABEL``, ``newest``, ``conflict``.
    ``detail`` adds how a default was found (``preference:approved``) when the
    rule alone does not say.
    """

    pri: str
    number: int | None
    rule: str
    requests: tuple[Request, ...] = ()
    candidates: tuple[int, ...] = ()
    in_graph: bool = False
    conflict: Conflict | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pri": self.pri, "number": self.number, "rule": self.rule, "detail": self.detail,
            "requests": [r.to_json() for r in self.requests], "candidates": list(self.candidates),
            "in_graph": self.in_graph, "conflict": None if self.conflict is None else self.conflict.to_json(),
        }



# the order requests are kept and shown in; dependents are never None here
# (root requests are kept apart), and a C-level key keeps sorting cheap
sort_key = attrgetter("hops", "root", "dependent", "number")
