"""Checking and normalizing the client's arguments before anything is sent.

Everything the grammar can refuse is refused here, locally, so a malformed
PRI or time costs no request and says exactly what is wrong.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ._errors import InvalidInput, InvalidPRI
from ._pri import LATEST, parse_label, parse_pri, parse_ref
from ._timespec import format_time, parse_time

__all__ = [
    "JSON", "TimeArg", "Progress", "as_time", "pri_path", "check_label", "version_selector", "exact_ref",
    "any_ref", "path_segment", "check_sha", "workspace_spec", "output_pri", "workspace_origin",
]

JSON = dict[str, Any]
TimeArg = str | _dt.datetime | None
# progress(bytes done, bytes in all, files done, files in all): called as a transfer moves on
Progress = Callable[[int, int, int, int], None]

_DIGITS_RE = re.compile(r"[0-9]+")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
# What a fetched Workspace carries beyond its spec: dropped so a record can be edited and put back.
_WORKSPACE_RECORD_ONLY = ("name", "revision", "changed_at", "deleted")


def as_time(value: TimeArg) -> str | None:
    """Any accepted time form -> absolute ISO text, so ``-3d`` is fixed when it is given."""
    if value is None:
        return None
    return format_time(parse_time(value))


def pri_path(pri: object) -> str:
    """Validate a bare PRI and return it path-encoded."""
    return quote(parse_pri(str(pri)).text, safe=":@")


def check_label(label: str, *, settable: bool = False) -> str:
    parse_label(label)
    if settable and label == LATEST:
        raise InvalidInput("'latest' always names the newest version; it cannot be moved or deleted")
    return label


def version_selector(value: int | str) -> str:
    """A version selector (number, label or ``latest``) as it appears in a path."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"not a version selector: {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise InvalidInput(f"version numbers start at 1, not {value}")
        return str(value)
    if _DIGITS_RE.fullmatch(value):
        if value.startswith("0"):
            raise InvalidInput(f"{value!r}: versions start at 1 and have no leading zeros")
        return value
    return check_label(value)


def exact_ref(ref: str, what: str) -> str:
    parsed = parse_ref(str(ref))
    if parsed.number is None:
        raise InvalidInput(f"{what} {ref!r} must name an exact version (PRI@N)")
    return str(parsed)


def any_ref(ref: str) -> str:
    return str(parse_ref(str(ref)))


def path_segment(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise InvalidInput(f"{what} must be non-empty text, not {name!r}")
    return quote(name, safe="")


def check_sha(sha: str) -> str:
    if not isinstance(sha, str) or _SHA_RE.fullmatch(sha) is None:
        raise InvalidInput(f"not a sha256 (64 lowercase hex characters): {sha!r}")
    return sha


def output_pri(text: str) -> str:
    """A workspace output: a product's PRI, never a version (the service refuses ``PRI@N`` the same way)."""
    if isinstance(text, str) and "@" in text:
        raise InvalidPRI(f"output {text!r}: an output names a product (PRI), not a version or label")
    return parse_pri(text).text


def workspace_spec(spec: JSON) -> JSON:
    """Check a WorkspaceSpec and make its pin absolute (a pin given as ``-3d`` must not drift)."""
    if not isinstance(spec, dict):
        raise InvalidInput("a workspace spec is a JSON object")
    out = {k: v for k, v in spec.items() if k not in _WORKSPACE_RECORD_ONLY}
    out["roots"] = [any_ref(r) for r in spec.get("roots", [])]
    out["overrides"] = [exact_ref(o, "override") for o in spec.get("overrides", [])]
    out["prefer"] = [check_label(p) for p in spec.get("prefer", [])]
    out["pin"] = as_time(spec.get("pin"))
    if "outputs" in spec:  # only when given: a service that predates outputs refuses the key
        out["outputs"] = [output_pri(o) for o in spec["outputs"]]
    return out


def workspace_origin(value: Any) -> JSON:
    """The workspace a version is published from: ``{"name", "revision"}`` as the service takes it.

    A whole Workspace record (``get_workspace``'s answer) works too: its name
    and revision are what is sent.
    """
    if not isinstance(value, dict) or "name" not in value or "revision" not in value:
        raise InvalidInput(f"a version's workspace is {{'name': NAME, 'revision': N}}, not {value!r}")
    name, revision = value["name"], value["revision"]
    path_segment(name, "workspace name")
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise InvalidInput(f"a workspace revision is a number >= 1, not {revision!r}")
    return {"name": name, "revision": revision}
