"""Directory trees to publish, and their exact description to compare a round trip."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def make_tree(root: Path) -> Path:
    """Nested directories, a symlink, an empty file, a unicode name, modes, shared content."""
    (root / "geo" / "sub").mkdir(parents=True)
    (root / "tex").mkdir()
    (root / "geo" / "walter.usd").write_bytes(b"#usda 1.0\n" + bytes(range(256)) * 4096)
    (root / "geo" / "sub" / "ünïcødé naïve.txt").write_text("unicode\n", encoding="utf-8")
    (root / "empty").write_bytes(b"")
    (root / "tex" / "a.exr").write_bytes(b"same bytes")
    (root / "tex" / "b.exr").write_bytes(b"same bytes")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "tex" / "a.exr").chmod(0o600)
    (root / "tex").chmod(0o750)
    os.symlink("geo/walter.usd", root / "latest.usd")
    os.symlink("../walter.usd", root / "geo" / "sub" / "up.usd")
    return root


def describe(root: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (type, permission bits, sha256 or symlink target), for every entry under root."""
    found: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", 0, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(full.read_bytes()).hexdigest())
    return found
