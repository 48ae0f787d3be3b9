"""Time forms accepted everywhere a time is taken (``as_of``, ``--pin``, ``--at``).

- ISO 8601 with a zone: ``2019-01-24T18:00:00Z``, ``2019-01-24T19:00:00+01:00``
- a bare date ``2019-01-24``: the *end* of that day in UTC, so everything
  published that day is in
- ``now``
- relative: ``-3d``, ``-12h``, ``-30m``, ``-45s``, ``-2w``, turned into an
  absolute time when given (a pin written as ``-3d`` does not drift)

Times are kept as aware UTC datetimes with microsecond precision, and sent as
ISO text with a ``Z``.
"""

from __future__ import annotations

import datetime as _dt
import re

from ._errors import InvalidTime

__all__ = ["parse_time", "format_time", "utcnow", "to_micros", "from_micros"]

UTC = _dt.timezone.utc
_RELATIVE_RE = re.compile(r"-(\d+)([smhdw])")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(UTC)


def parse_time(text: str | _dt.datetime, *, now: _dt.datetime | None = None) -> _dt.datetime:
    """Turn any accepted time form into an aware UTC datetime."""
    if isinstance(text, _dt.datetime):
        if text.tzinfo is None:
            raise InvalidTime(f"{text.isoformat()}: a time needs a zone")
        return text.astimezone(UTC)
    if not isinstance(text, str):
        raise InvalidTime(f"not a time: {text!r}")
    s = text.strip()
    if s == "now":
        return now or utcnow()
    m = _RELATIVE_RE.fullmatch(s)
    if m:
        return (now or utcnow()) - _dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    if _DATE_RE.fullmatch(s):
        try:
            day = _dt.date.fromisoformat(s)
        except ValueError as exc:
            raise InvalidTime(f"{s!r}: {exc}") from None
        return _dt.datetime.combine(day, _dt.time.max, UTC)
    try:
        value = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise InvalidTime(
            f"{s!r}: expected ISO 8601 with a zone, a date (YYYY-MM-DD), 'now' or -Nd/-Nh/-Nm"
        ) from None
    if value.tzinfo is None:
        raise InvalidTime(f"{s!r}: a time needs a zone (e.g. Z or +01:00)")
    return value.astimezone(UTC)


def format_time(value: _dt.datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: one spelling per instant."""
    v = value.astimezone(UTC)
    # the year by hand: strftime's %Y does not pad years before 1000 on glibc,
    # which would not parse back
    return f"{v.year:04d}-{v:%m-%dT%H:%M:%S.%f}Z"


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: _dt.datetime) -> int:
    """Microseconds since the epoch: how times are stored and compared exactly."""
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=value)
