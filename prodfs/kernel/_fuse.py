"""pyfuse3, imported only after the zero-message open library is loaded (see `_zeroopen`).

The daemon's modules import pyfuse3 from here, so that its references to libfuse
bind to the library's `fuse_session_new` whichever of them is imported first.
"""

from __future__ import annotations

from . import _zeroopen

_zeroopen.load()

import pyfuse3  # noqa: E402

__all__ = ["pyfuse3"]
