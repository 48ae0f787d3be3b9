"""Version manifests: what a version contains, and the rules every manifest obeys.

A manifest is a list of entries, each a dict (the JSON form)::

    {"path": "geo/walter.usd", "type": "file", "size": 1234, "mode": 0o644,
     "sha256": "<64 hex>"}
    {"path": "geo", "type": "dir", "mode": 0o755}
    {"path": "latest.usd", "type": "symlink", "target": "geo/walter.usd"}

Rules (checked by the service at publish, and again by the daemon, which
trusts nothing it did not check):

- ``path`` is relative, ``/``-separated, normalized: no empty, ``.`` or ``..``
  component, no NUL, no leading or trailing ``/``, each component at most 255
  bytes of UTF-8;
- no two entries share a path; every parent of an entry is a ``dir`` entry
  (parents may be omitted by a publisher: `normalize_manifest` adds them);
- ``mode`` keeps permission bits only (``0o7777``); ``sha256`` is 64 lowercase
  hex characters; ``size`` >= 0;
- a symlink's ``target`` is relative and, resolved from the link's directory,
  stays inside the version (an absolute target or one climbing out is refused),
  also when it passes through other links of the version the way the kernel
  follows them (``d/up -> ..`` then ``x -> d/up/../..`` climbs out);
- at most `MAX_ENTRIES` entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._errors import InvalidInput

__all__ = [
    "MAX_ENTRIES",
    "Entry",
    "validate_manifest",
    "normalize_manifest",
    "scan_directory",
    "walk_directory",
    "sha256_file",
]

MAX_ENTRIES = 1_000_000
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TYPES = ("file", "dir", "symlink")


class InvalidManifest(InvalidInput):
    code = "invalid_manifest"


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    type: str
    mode: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None

    def to_json(self) -> dict:
        d: dict = {"path": self.path, "type": self.type, "mode": self.mode}
        if self.type == "file":
            d["size"] = self.size
            d["sha256"] = self.sha256
        elif self.type == "symlink":
            d["target"] = self.target
        return d


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidManifest(f"entry path must be non-empty text: {path!r}")
    if "\x00" in path:
        raise InvalidManifest(f"entry path contains NUL: {path!r}")
    if path.startswith("/"):
        raise InvalidManifest(f"entry path must be relative: {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidManifest(f"entry path is not normalized ({part!r} component): {path!r}")
        try:
            if len(part.encode("utf-8")) > 255:
                raise InvalidManifest(f"entry path component longer than 255 bytes: {path!r}")
        except UnicodeEncodeError:
            raise InvalidManifest(f"entry path is not valid UTF-8: {path!r}") from None
    return path


def _check_target(path: str, target: object) -> str:
    if not isinstance(target, str) or not target or "\x00" in target:
        raise InvalidManifest(f"symlink {path!r}: bad target {target!r}")
    if target.startswith("/"):
        raise InvalidManifest(f"symlink {path!r}: absolute target {target!r} leaves the version")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if joined == ".." or joined.startswith("../"):
        raise InvalidManifest(f"symlink {path!r}: target {target!r} leaves the version")
    return target


def _entry(raw: object) -> Entry:
    if not isinstance(raw, dict):
        raise InvalidManifest(f"manifest entry must be an object: {raw!r}")
    path = _check_path(raw.get("path"))
    kind = raw.get("type")
    if kind not in _TYPES:
        raise InvalidManifest(f"{path!r}: type must be one of {', '.join(_TYPES)}")
    mode = raw.get("mode", 0o755 if kind == "dir" else 0o644)
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        raise InvalidManifest(f"{path!r}: mode must be permission bits (0..0o7777)")
    if kind == "file":
        size, sha = raw.get("size"), raw.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifest(f"{path!r}: size must be a non-negative integer")
        if not isinstance(sha, str) or _SHA_RE.fullmatch(sha) is None:
            raise InvalidManifest(f"{path!r}: sha256 must be 64 lowercase hex characters")
        return Entry(path, "file", mode, size=size, sha256=sha)
    if kind == "symlink":
        return Entry(path, "symlink", 0o777, target=_check_target(path, raw.get("target")))
    return Entry(path, "dir", mode)


def validate_manifest(raw: object) -> list[Entry]:
    """Check a manifest's JSON form against every rule; return its entries sorted by path.

    Missing parent directories are refused here (use `normalize_manifest` on
    the publishing side to add them).
    """
    if not isinstance(raw, list):
        raise InvalidManifest("a manifest is a list of entries")
    if len(raw) > MAX_ENTRIES:
        raise InvalidManifest(f"a manifest holds at most {MAX_ENTRIES} entries")
    entries: dict[str, Entry] = {}
    for item in raw:
        e = _entry(item)
        if e.path in entries:
            raise InvalidManifest(f"duplicate entry {e.path!r}")
        entries[e.path] = e
    for e in entries.values():
        parent = posixpath.dirname(e.path)
        if parent and (parent not in entries or entries[parent].type != "dir"):
            raise InvalidManifest(f"{e.path!r}: parent {parent!r} is not a directory entry")
    for e in entries.values():
        if e.type == "symlink":
            _follow_inside(entries, e)
    return [entries[p] for p in sorted(entries)]


_MAX_LINK_HOPS = 40  # the kernel's own limit (ELOOP)


def _follow_inside(entries: dict[str, Entry], link: Entry) -> None:
    """Resolve a link's target through the manifest as the kernel would; refuse a climb out.

    A lexical check of each target alone misses a target that goes through
    another link: ``..`` after a link is taken from where the link led.
    """
    where = [p for p in posixpath.dirname(link.path).split("/") if p]
    todo = (link.target or "").split("/")
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not where:
                raise InvalidManifest(f"symlink {link.path!r}: target {link.target!r} leaves the version "
                                      "through another link")
            where.pop()
            continue
        e = entries.get("/".join([*where, part]))
        if e is None or (e.type == "file" and todo):
            return  # the kernel stops here (ENOENT, ENOTDIR): nothing beyond is reached
        if e.type == "symlink":
            hops += 1
            if hops > _MAX_LINK_HOPS:
                return  # a loop: the kernel answers ELOOP, nothing is reached
            todo = (e.target or "").split("/") + todo
            continue
        where.append(part)


def normalize_manifest(raw: Iterable[dict]) -> list[dict]:
    """Add missing parent directories, then validate. Returns JSON entries."""
    items = list(raw)
    have = {i.get("path") for i in items if isinstance(i, dict)}
    extra = []
    for i in items:
        p = i.get("path") if isinstance(i, dict) else None
        while isinstance(p, str) and "/" in p:
            p = posixpath.dirname(p)
            if p not in have:
                have.add(p)
                extra.append({"path": p, "type": "dir", "mode": 0o755})
    return [e.to_json() for e in validate_manifest(items + extra)]


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20, ahead: int = 32 << 20) -> str:
    # Asking the kernel for the next ``ahead`` bytes while hashing the current
    # ones overlaps the disk with the CPU: a cold 256 MiB file hashed about
    # twice as fast here as with plain sequential reads.
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # a buffer the file's size (and one byte to see the end), not always a megabyte: zeroing
        # 1 MiB for each 4 KiB file cost more than hashing it (a publish of 10,000 small files)
        buf = bytearray(min(bufsize, os.fstat(fd).st_size + 1))
        view = memoryview(buf)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        pos = advised = 0
        while True:
            if pos + ahead // 2 >= advised:
                os.posix_fadvise(fd, advised, ahead, os.POSIX_FADV_WILLNEED)
                advised += ahead
            n = os.readv(fd, [buf])
            if not n:
                return h.hexdigest()
            h.update(view[:n])
            pos += n
    finally:
        os.close(fd)


def scan_directory(root: str | os.PathLike) -> Iterator[tuple[Entry, Path | None]]:
    """Walk a directory to publish: yields (entry, local file path or None), files hashed.

    As `walk_directory`, with every file's ``sha256`` filled in.
    """
    for entry, local in walk_directory(root):
        if local is not None:
            entry = dataclasses.replace(entry, sha256=sha256_file(local))
        yield entry, local


def walk_directory(root: str | os.PathLike) -> Iterator[tuple[Entry, Path | None]]:
    """Walk a directory to publish: yields (entry, local file path or None), files not yet hashed.

    Symlinks are kept as symlinks (never followed); anything that is neither
    a file, a directory nor a symlink (sockets, devices) is refused, and so is
    a directory that cannot be listed: a tree is published whole or not at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"{root}: not a directory")

    def unlistable(exc: OSError) -> None:
        raise InvalidInput(f"{exc.filename}: cannot be listed ({exc.strerror})") from exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            st = full.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                yield Entry(rel, "symlink", 0o777, target=os.readlink(full)), None
            elif stat.S_ISDIR(st.st_mode):
                yield Entry(rel, "dir", mode), None
            elif stat.S_ISREG(st.st_mode):
                yield Entry(rel, "file", mode, size=st.st_size), full
            else:
                raise InvalidInput(f"{full}: only files, directories and symlinks can be published")
