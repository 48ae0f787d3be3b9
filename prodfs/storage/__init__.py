"""Storage: what a mount keeps on local disk, and how it is trusted.

Owns the content-addressed blob cache (`blob_cache`: fetch, verify, evict,
fetch-ahead by packs), its verification ledger (`ledger`), version manifests
kept on disk (`versions`), the contexts saved for offline starts (`offline`)
filling a cache ahead of a job (`prefetch`), and the writable trees of
workspace outputs (`scratch`). Knows resolution only to
name what a snapshot holds; knows nothing of FUSE.
"""

from __future__ import annotations

from .blob_cache import EMPTY_SHA256, BlobCache, CheckReport, CorruptBlob, check_cache, fetch_ahead_plan
from .ledger import Ledger, Signature, fsignature_of, signature_of
from .offline import SavedContexts, pin_key, snapshot_key
from .prefetch import prefetch
from .versions import VersionStore, VersionTree, Want

__all__ = [
    "EMPTY_SHA256", "BlobCache", "CheckReport", "CorruptBlob", "check_cache", "fetch_ahead_plan",
    "Ledger", "Signature", "fsignature_of", "signature_of",
    "SavedContexts", "pin_key", "snapshot_key", "prefetch", "VersionStore", "VersionTree", "Want",
]
