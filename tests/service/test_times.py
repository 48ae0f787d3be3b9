"""The service's fast time formatting spells every instant exactly as ``pvc_client.format_time``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pvc_client import format_time, from_micros, parse_time, to_micros
from pvc_service._catalog import iso

# years 1..9999, microsecond resolution
MICROS = st.integers(min_value=-62135596800_000_000, max_value=253402300799_999_999)


@given(MICROS)
def test_iso_matches_format_time_and_parses_back(us: int) -> None:
    assert iso(us) == format_time(from_micros(us))
    assert to_micros(parse_time(iso(us))) == us


def test_early_years_are_padded() -> None:
    assert iso(-62135596800_000_000) == "0001-01-01T00:00:00.000000Z"
