"""PVC client: the PRI grammar, time forms, manifests and the async HTTP client.

The public surface is re-exported here; the ``_modules`` behind it are private.
"""

from __future__ import annotations

from ._client import DEFAULT_URL, PUBLISH_BATCH_LIMIT, VERSIONS_BATCH_LIMIT, PVCClient
from ._errors import (
    ERROR_CODES,
    Conflict,
    InvalidInput,
    InvalidPRI,
    InvalidTime,
    NotFound,
    PVCError,
    Unauthorized,
    Unavailable,
)
from ._fsutil import syncfs
from ._manifest import (MAX_ENTRIES, Entry, normalize_manifest, scan_directory, sha256_file, validate_manifest,
                        walk_directory)
from ._pack import MEDIA_TYPE as PACK_MEDIA_TYPE
from ._pack import (PACK_BLOB_LIMIT, Frame, PackError, PackParser, SourceChanged, frame_groups, frame_header, plan_packs,
                    read_frames)
from ._pri import LATEST, MAX_NAME_BYTES, PRI, Ref, is_label, parse_label, parse_pri, parse_ref
from ._publish import Publication, publish_manifest
from ._timespec import format_time, from_micros, parse_time, to_micros, utcnow

__version__ = "0.1.0"

__all__ = [
    "ERROR_CODES", "Conflict", "InvalidInput", "InvalidPRI", "InvalidTime", "NotFound", "PVCError",
    "Unauthorized", "Unavailable", "MAX_ENTRIES", "Entry", "normalize_manifest", "scan_directory", "walk_directory",
    "sha256_file", "validate_manifest", "LATEST", "MAX_NAME_BYTES", "PRI", "Ref", "is_label",
    "parse_label", "parse_pri", "parse_ref", "format_time", "from_micros", "parse_time",
    "to_micros", "utcnow", "DEFAULT_URL", "VERSIONS_BATCH_LIMIT", "PUBLISH_BATCH_LIMIT", "PVCClient", "syncfs", "PACK_MEDIA_TYPE",
    "PACK_BLOB_LIMIT", "Frame", "PackError", "PackParser", "SourceChanged", "frame_header", "plan_packs",
    "frame_groups", "read_frames", "publish_manifest", "Publication",
]

