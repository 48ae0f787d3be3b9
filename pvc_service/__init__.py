"""The reference PVC service: a product version store over HTTP (docs/api.md).

``create_app(config)`` (in ``app``) builds the ASGI application; ``server.main``
is the command line (``python -m pvc_service``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
