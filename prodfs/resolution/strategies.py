"""Strategies: how the resolver settles a product that dependents disagree on.

A strategy is a small class with a ``name`` and one method, ``choose``. The
resolver calls it for every product of a workspace's graph that is neither a
root nor overridden, with the requests of the chosen versions that depend on
it (never empty) and a `ChoiceEnv` (visible versions, the preference-ordered
default, the context). It answers a visible version number, or None to leave
the product without a version (a conflict: the daemon answers EIO for it).

Built-in strategies are registered here; others plug in through the
entry-point group ``prodfs.strategies`` (see docs/strategies.md), loaded once,
on first use, so that importing the daemon never imports plugins it does not
need and a broken plugin cannot stop it from starting.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, ClassVar

from .context import Context

if TYPE_CHECKING:
    from .graph import ProductInfo
    from ._records import Request

__all__ = [
    "ENTRY_POINT_GROUP",
    "ChoiceEnv",
    "Strategy",
    "UnknownStrategy",
    "available",
    "get_strategy",
    "preferred_version",
    "register",
]

ENTRY_POINT_GROUP = "prodfs.strategies"
log = logging.getLogger(__name__)


def preferred_version(
    visible: Sequence[int], labels: Mapping[str, int], prefer: Sequence[str]
) -> tuple[int | None, str]:
    """The default version and the rule that gave it.

    The first label of ``prefer`` that is on a visible version wins
    (``preference:LABEL``); else the newest visible version (``newest``).
    ``labels`` must already be limited to visible versions.
    """
    if not visible:
        return None, "newest"
    for label in prefer:
        if label == "latest":
            return visible[-1], "preference:latest"
        n = labels.get(label)
        if n is not None:
            return n, f"preference:{label}"
    return visible[-1], "newest"


class ChoiceEnv:
    """What a strategy may know about one product besides its requests."""

    __slots__ = ("context", "pri", "visible", "labels", "roots", "_preferred")

    def __init__(
        self,
        context: Context,
        pri: str,
        visible: tuple[int, ...],
        labels: Mapping[str, int],
        roots: tuple[str, ...],
    ) -> None:
        self.context = context
        self.pri = pri
        #: visible version numbers (created at or before the pin), ascending
        self.visible = visible
        #: labels of the product that point at visible versions
        self.labels = labels
        #: the context's roots as canonical PRIs, in the context's order
        self.roots = roots
        self._preferred: tuple[int | None, str] | None = None

    def preferred(self) -> int | None:
        """The version by label preference, then the newest; None if none is visible."""
        if self._preferred is None:
            self._preferred = preferred_version(self.visible, self.labels, self.context.prefer)
        return self._preferred[0]

    def preferred_rule(self) -> str:
        """How `preferred` chose: ``preference:LABEL`` or ``newest``."""
        self.preferred()
        assert self._preferred is not None
        return self._preferred[1]

    def newest(self) -> int | None:
        return self.visible[-1] if self.visible else None

    def root_rank(self, request: Request) -> int:
        """Index in the context's roots of the root the request was reached from.

        When a dependent is reachable from several roots at the same distance,
        the earliest root counts.
        """
        return request.root


class Strategy(ABC):
    """Interface of a strategy. Subclass it, set ``name``, implement ``choose``."""

    name: ClassVar[str]
    #: True only when ``choose`` never looks at the requests: the resolver
    #: then knows the choice before it knows the requests, and only follows
    #: the dependencies of that one version (a large saving on big graphs).
    ignores_requests: ClassVar[bool] = False

    @abstractmethod
    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        """A visible version number of ``product``, or None for a conflict."""


class UnknownStrategy(KeyError, ValueError):
    """A strategy name that is neither built in nor provided by a plugin."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = list(known)

    def __str__(self) -> str:
        return f"unknown strategy {self.name!r}; known: {', '.join(self.known) or '(none)'}"


_registry: dict[str, type[Strategy]] = {}
_builtin: set[str] = set()
_plugins_loaded = False


def register(cls: type[Strategy]) -> type[Strategy]:
    """Register a strategy class under its ``name``; usable as a decorator."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls!r}: a strategy needs a non-empty 'name' class attribute")
    if not callable(getattr(cls, "choose", None)):
        raise TypeError(f"{cls!r}: a strategy needs a 'choose(product, requests, env)' method")
    if name in _builtin and _registry.get(name) is not cls:
        raise ValueError(f"strategy {name!r} is built in and cannot be replaced")
    _registry[name] = cls
    return cls


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        # a broken plugin must not take the daemon down: log it and go on
        try:
            cls = ep.load()
            if getattr(cls, "name", None) != ep.name:
                raise TypeError(f"its class is named {getattr(cls, 'name', None)!r}, not {ep.name!r}")
            register(cls)
        except Exception as exc:  # noqa: BLE001 - any plugin failure is reported the same way
            log.warning("strategy plugin %s (%s) ignored: %s", ep.name, ep.value, exc)


def _reset_plugins() -> None:
    """Forget loaded plugins so the next lookup scans entry points again (tests)."""
    global _plugins_loaded
    for name in [n for n in _registry if n not in _builtin]:
        del _registry[name]
    _plugins_loaded = False


def available() -> list[str]:
    """Names of every known strategy, built-in and plugin, sorted."""
    _load_plugins()
    return sorted(_registry)


def get_strategy(name: str) -> Strategy:
    """An instance of the strategy called ``name``; `UnknownStrategy` if none."""
    _load_plugins()
    cls = _registry.get(name)
    if cls is None:
        raise UnknownStrategy(name, sorted(_registry))
    return cls()


# -- built-in strategies ------------------------------------------------------


class Latest(Strategy):
    """The preferred visible version, whatever dependents asked (the artists' default)."""

    name = "latest"
    ignores_requests = True

    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        return env.preferred()


class Highest(Strategy):
    """The highest version any chosen dependent asks for."""

    name = "highest"

    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        if not requests:
            return env.preferred()
        return max(r.number for r in requests)


class Lowest(Strategy):
    """The lowest version any chosen dependent asks for."""

    name = "lowest"

    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        if not requests:
            return env.preferred()
        return min(r.number for r in requests)


class Nearest(Strategy):
    """The version asked by the dependent nearest a root.

    Fewest hops first, then the earlier root, then the higher version.
    """

    name = "nearest"

    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        if not requests:
            return env.preferred()
        # r.root is what env.root_rank(r) answers, without a call per request
        best = min(requests, key=lambda r: (r.hops, r.root, -r.number))
        return best.number


class Strict(Strategy):
    """Any disagreement is a conflict: the product gets no version."""

    name = "strict"

    def choose(self, product: ProductInfo, requests: Sequence[Request], env: ChoiceEnv) -> int | None:
        numbers = {r.number for r in requests}
        if not numbers:
            return env.preferred()
        return numbers.pop() if len(numbers) == 1 else None


for _cls in (Latest, Highest, Lowest, Nearest, Strict):
    register(_cls)
    _builtin.add(_cls.name)
del _cls
