"""Resolution contexts: what a workspace or a mount asks the resolver for.

A context is plain, frozen, hashable data: the roots (``PRI``, ``PRI@N`` or
``PRI@LABEL``), the strategy name, an optional time pin, an ordered label
preference and overrides (``PRI@N`` that always win). It is validated when
built, so a bad root or override is refused where the user typed it rather
than discovered later inside the daemon.

The strategy name is only checked for shape here: strategies may come from
plugins that are installed on the daemon's host and not on the host that
writes the workspace. The resolver reports an unknown name as an error.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pvc_client import (
    InvalidInput,
    InvalidPRI,
    Ref,
    format_time,
    from_micros,
    parse_label,
    parse_ref,
    parse_time,
    to_micros,
)

__all__ = ["Context", "DEFAULT_STRATEGY"]

DEFAULT_STRATEGY = "latest"
# entry-point names are free text in packaging; keep them to one word so that
# they survive command lines, logs and path-like spellings unchanged
_STRATEGY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _texts(value: Any, what: str) -> tuple[str, ...]:
    # a bare string would otherwise be split into characters by tuple()
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(f"{what} must be a list of strings, not {type(value).__name__}")
    out = tuple(value)
    for item in out:
        if not isinstance(item, str):
            raise InvalidInput(f"{what} must be strings, not {type(item).__name__}: {item!r}")
    return out


@dataclass(frozen=True)
class Context:
    """What to resolve and how. ``pin_us`` is microseconds since the epoch."""

    roots: tuple[str, ...] = ()
    strategy: str = DEFAULT_STRATEGY
    pin_us: int | None = None
    prefer: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    workspace: str | None = None
    snapshot: str | None = None

    def __post_init__(self) -> None:
        roots = _texts(self.roots, "roots")
        root_refs = tuple(parse_ref(r) for r in roots)
        overrides = _texts(self.overrides, "overrides")
        override_refs = tuple(parse_ref(o) for o in overrides)
        seen: dict[str, int] = {}
        for o, ref in zip(overrides, override_refs):
            if ref.number is None:
                raise InvalidPRI(f"{o!r}: an override names an exact version (PRI@N)")
            prev = seen.setdefault(ref.pri.text, ref.number)
            if prev != ref.number:
                raise InvalidInput(
                    f"overrides {ref.pri.text}@{prev} and {o} disagree: give one version per product"
                )
        prefer = _texts(self.prefer, "prefer")
        for label in prefer:
            parse_label(label)
        if not isinstance(self.strategy, str) or not _STRATEGY_RE.fullmatch(self.strategy):
            raise InvalidInput(f"strategy {self.strategy!r}: expected a name such as 'latest'")
        if self.pin_us is not None and (isinstance(self.pin_us, bool) or not isinstance(self.pin_us, int)):
            raise InvalidInput(f"pin_us must be integer microseconds, not {self.pin_us!r}")
        for name in ("workspace", "snapshot"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise InvalidInput(f"{name} must be text or None, not {v!r}")
        # normalise lists given by callers to tuples so the context stays hashable
        object.__setattr__(self, "roots", roots)
        object.__setattr__(self, "overrides", overrides)
        object.__setattr__(self, "prefer", prefer)
        # kept parsed: a live mount resolves the same context on every change
        object.__setattr__(self, "_root_refs", root_refs)
        object.__setattr__(self, "_override_refs", override_refs)

    @property
    def root_refs(self) -> tuple[Ref, ...]:
        """The roots, parsed."""
        return self._root_refs  # type: ignore[attr-defined,no-any-return]

    @property
    def override_refs(self) -> tuple[Ref, ...]:
        """The overrides, parsed (each has a ``number``)."""
        return self._override_refs  # type: ignore[attr-defined,no-any-return]

    @property
    def live(self) -> bool:
        """True when the context follows the store as it changes (no pin)."""
        return self.pin_us is None

    @property
    def pin_text(self) -> str | None:
        return None if self.pin_us is None else format_time(from_micros(self.pin_us))

    def replace(self, **changes: Any) -> Context:
        """A copy with some fields changed, validated like a new context."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "roots": list(self.roots),
            "strategy": self.strategy,
            "pin": self.pin_text,
            "prefer": list(self.prefer),
            "overrides": list(self.overrides),
            "workspace": self.workspace,
            "snapshot": self.snapshot,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Context:
        """Inverse of `to_json`; ``pin`` may be in any form `parse_time` takes."""
        if not isinstance(data, Mapping):
            raise InvalidInput(f"a context is a JSON object, not {type(data).__name__}")
        pin = data.get("pin")
        return cls(
            roots=_texts(data.get("roots"), "roots"),
            strategy=data.get("strategy") or DEFAULT_STRATEGY,
            pin_us=None if pin in (None, "") else to_micros(parse_time(pin)),
            prefer=_texts(data.get("prefer"), "prefer"),
            overrides=_texts(data.get("overrides"), "overrides"),
            workspace=data.get("workspace"),
            snapshot=data.get("snapshot"),
        )

    @classmethod
    def from_workspace(cls, record: Mapping[str, Any]) -> Context:
        """A context from a Workspace record of the API (docs/api.md)."""
        if not isinstance(record, Mapping):
            raise InvalidInput(f"a workspace record is a JSON object, not {type(record).__name__}")
        return cls.from_json({**record, "workspace": record.get("name"), "snapshot": None})

    def describe(self) -> str:
        """One line for logs and status output."""
        parts = [f"strategy {self.strategy}"]
        parts.append("live" if self.pin_us is None else f"pinned {self.pin_text}")
        if self.prefer:
            parts.append("prefer " + " > ".join(self.prefer) + " > newest")
        parts.append("roots " + (", ".join(self.roots) if self.roots else "(none)"))
        if self.overrides:
            parts.append("overrides " + ", ".join(self.overrides))
        head = []
        if self.workspace:
            head.append(f"workspace {self.workspace}")
        if self.snapshot:
            head.append(f"snapshot {self.snapshot}")
        return ("; ".join(head) + ": " if head else "") + "; ".join(parts)
