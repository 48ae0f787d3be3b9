"""The stable import path for third-party strategies: ``from prodfs.strategies import Strategy``.

The module lives in `prodfs.resolution.strategies`; this name is the same
module object (not a copy), so a strategy registered through either name is
in the one registry. See docs/strategies.md.
"""

from __future__ import annotations

import sys

from .resolution import strategies as _strategies

sys.modules[__name__] = _strategies
