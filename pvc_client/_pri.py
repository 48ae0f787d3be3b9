"""The PRI grammar: Pipeline Resource Identifiers and version references.

A PRI is ``ENTITY-CATEGORY``: ENTITY is one or more segments joined by ``:``,
the first being the show (``spies:100:10``); CATEGORY likewise (``lgt:walter``).
A segment is ``[A-Za-z0-9_]+``, so the one ``-`` splits entity from category.

A reference is a PRI optionally followed by ``@N`` (an exact version, N >= 1,
no leading zeros so that every version has exactly one spelling) or
``@LABEL`` (``[a-z][a-z0-9_]*``; ``latest`` is reserved for the newest
visible version). Branch notation (``@1.2.5``) is refused: branches are kept
by PVC but never exposed.

The whole reference must fit one path component (255 bytes), because that is
how ProdFS spells it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import InvalidPRI

__all__ = [
    "MAX_NAME_BYTES",
    "PRI",
    "Ref",
    "LATEST",
    "parse_pri",
    "parse_ref",
    "parse_label",
    "is_label",
]

MAX_NAME_BYTES = 255
LATEST = "latest"

_SEGMENT = r"[A-Za-z0-9_]+"
_PRI_RE = re.compile(rf"({_SEGMENT}(?::{_SEGMENT})*)-({_SEGMENT}(?::{_SEGMENT})*)")
_LABEL_RE = re.compile(r"[a-z][a-z0-9_]*")
_NUMBER_RE = re.compile(r"[1-9][0-9]*")
_BRANCH_RE = re.compile(r"[0-9]+(?:\.[0-9]+)+")


@dataclass(frozen=True, slots=True, order=True)
class PRI:
    """A product name. Immutable, hashable, ordered by its text."""

    text: str

    @property
    def entity(self) -> str:
        return self.text.split("-", 1)[0]

    @property
    def category(self) -> str:
        return self.text.split("-", 1)[1]

    @property
    def show(self) -> str:
        return self.text.split(":", 1)[0].split("-", 1)[0]

    def at(self, version: int | str) -> Ref:
        if isinstance(version, int):
            return Ref(self, number=version)
        return Ref(self, label=version)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Ref:
    """A PRI with an optional version selector.

    Exactly one of ``number`` and ``label`` is set, or neither (versionless).
    """

    pri: PRI
    number: int | None = None
    label: str | None = None

    @property
    def versionless(self) -> bool:
        return self.number is None and self.label is None

    @property
    def explicit(self) -> bool:
        return self.number is not None

    @property
    def selector(self) -> str | None:
        """The text after ``@``, or None when versionless."""
        if self.number is not None:
            return str(self.number)
        return self.label

    def __str__(self) -> str:
        sel = self.selector
        return self.pri.text if sel is None else f"{self.pri.text}@{sel}"


def _check_length(text: str) -> None:
    if len(text.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise InvalidPRI(f"{text[:40]!r}...: longer than {MAX_NAME_BYTES} bytes")


def parse_pri(text: str) -> PRI:
    """Parse a bare PRI (no ``@``). Raises `InvalidPRI` with the reason."""
    if not isinstance(text, str):
        raise InvalidPRI(f"a PRI must be text, not {type(text).__name__}")
    _check_length(text)
    if "@" in text:
        raise InvalidPRI(f"{text!r}: a product name takes no version here")
    if _PRI_RE.fullmatch(text) is None:
        raise InvalidPRI(f"{text!r}: {_explain(text)}")
    return PRI(text)


def parse_label(text: str) -> str:
    if _LABEL_RE.fullmatch(text) is None:
        raise InvalidPRI(
            f"{text!r}: a label is a lowercase letter followed by [a-z0-9_]"
        )
    return text


def is_label(text: str) -> bool:
    return _LABEL_RE.fullmatch(text) is not None


def parse_ref(text: str) -> Ref:
    """Parse ``PRI``, ``PRI@N`` or ``PRI@LABEL``. Raises `InvalidPRI`."""
    if not isinstance(text, str):
        raise InvalidPRI(f"a PRI must be text, not {type(text).__name__}")
    _check_length(text)
    name, at, selector = text.partition("@")
    pri = parse_pri(name)
    if not at:
        return Ref(pri)
    if _NUMBER_RE.fullmatch(selector):
        return Ref(pri, number=int(selector))
    if _LABEL_RE.fullmatch(selector):
        return Ref(pri, label=selector)
    if _BRANCH_RE.fullmatch(selector):
        raise InvalidPRI(
            f"{text!r}: branch versions are not exposed; use @N or @LABEL"
        )
    if selector.isdigit():
        raise InvalidPRI(f"{text!r}: versions start at 1 and have no leading zeros")
    raise InvalidPRI(f"{text!r}: a version is @N (N >= 1) or @label ([a-z][a-z0-9_]*)")


def _explain(text: str) -> str:
    if not text:
        return "empty"
    if "-" not in text:
        return "a PRI is ENTITY-CATEGORY (e.g. spies:100:10-lgt:walter); no '-' found"
    if "/" in text:
        return "a PRI has no '/'"
    return "segments are [A-Za-z0-9_]+ joined by ':', one '-' between entity and category"
