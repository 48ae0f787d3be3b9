"""Options of a mount, shared by ``prodfs mount``, the daemon and ``mount.fuse.prodfs``.

Every long option can also be given in ``-o`` form with ``_`` for ``-``
(``-o cache_dir=/var/cache/prodfs,pin=2019-01-24``), which is how mount(8)
and fstab pass them.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

__all__ = ["add_mount_options", "parse_size", "default_cache_dir", "expand_o_options", "join_time_values", "MOUNT_FLAGS"]

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

# -o words that are flags (no value); the rest take one.
MOUNT_FLAGS = {"foreground", "allow_other", "insecure", "no_zero_open", "no_fast_path", "no_passthrough"}
# -o words mount(8) passes that mean nothing to us.
IGNORED_O = {"rw", "ro", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto",
             "user", "nouser", "users", "defaults", "_netdev", "nofail", "relatime", "noatime",
             "atime", "async", "sync"}


def parse_size(text: str) -> int:
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 500M, 20G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _seconds(low: float, high: float):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text!r}: expected seconds between {low:g} and {high:g}")
        return value

    return parse


_feed_poll = _seconds(1.0, 60.0)
_pvc_timeout = _seconds(0.1, 3600.0)


def _root_page(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r}: a root page is 1 to 100000 names")
    return n


def default_cache_dir() -> Path:
    if os.getuid() == 0:
        return Path("/var/cache/prodfs")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base, "prodfs")


def add_mount_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint", help="where to mount (e.g. /p)")
    p.add_argument("--pvc", metavar="URL", default=os.environ.get("PVC_URL", "http://127.0.0.1:8750"),
                   help="the PVC service (default: $PVC_URL or http://127.0.0.1:8750)")
    p.add_argument("--token-file", metavar="FILE",
                   help="file holding the PVC token (default: $PVC_TOKEN)")
    ctx = p.add_argument_group("context (what versionless paths resolve to)")
    ctx.add_argument("--workspace", metavar="NAME", help="resolve in this PVC workspace, following its changes")
    ctx.add_argument("--snapshot", metavar="ID", help="serve exactly this snapshot's resolution (read-only, immutable)")
    ctx.add_argument("--pin", metavar="T", help="see the store as it was at T (ISO 8601, date, -3d, now)")
    ctx.add_argument("--root", action="append", default=[], metavar="R", help="a root product (PRI, PRI@N, PRI@LABEL)")
    ctx.add_argument("--strategy", metavar="S", help="diamond strategy (latest, highest, lowest, nearest, strict, ...)")
    ctx.add_argument("--prefer", action="append", default=[], metavar="LABEL", help="label preference, in order")
    ctx.add_argument("--override", action="append", default=[], metavar="PRI@N", help="a version that always wins")
    cache = p.add_argument_group("caches")
    cache.add_argument("--cache-dir", type=Path, default=None, help="local payload cache (default: %s)" % default_cache_dir())
    cache.add_argument("--cache-size", type=parse_size, default=None, metavar="SIZE",
                       help="evict least recently used payloads beyond this size (e.g. 50G)")
    cache.add_argument("--cache-verify", choices=("once", "per-mount"), default="once",
                       help="once: trust a cached payload hashed before, by any process, while its file is "
                            "unchanged (inode, size, mtime, ctime; `prodfs fsck` re-hashes them all); "
                            "per-mount: hash each payload again at its first use by this daemon")
    cache.add_argument("--fetch-ahead", type=parse_size, default=4 << 20, metavar="SIZE",
                       help="when a payload must come from PVC, bring the small payloads of its directory "
                            "along in the same request, up to SIZE in all (default 4M; 0: only the one opened)")
    cache.add_argument("--no-zero-open", action="store_true",
                       help="send every open and directory listing to the daemon instead of letting the "
                            "kernel answer warm ones itself (slower; for diagnosis)")
    cache.add_argument("--no-fast-path", action="store_true",
                       help="send every read and lookup to the daemon's Python handlers instead of answering "
                            "reads of verified payloads and lookups inside versions in C (slower; for diagnosis)")
    cache.add_argument("--no-passthrough", action="store_true",
                       help="serve verified payloads through FUSE instead of letting the kernel read them "
                            "straight from the cache (FUSE passthrough: Linux 6.9 or later, as root)")
    cache.add_argument("--live-timeout", type=float, default=1.0, metavar="SECONDS",
                       help="how long the kernel may keep a versionless name of a live context (default 1)")
    cache.add_argument("--pvc-timeout", type=_pvc_timeout, default=10.0, metavar="SECONDS",
                       help="give up on a PVC request after this long, retries included: the path answers EIO (default 10)")
    cache.add_argument("--feed-poll", type=_feed_poll, default=25.0, metavar="SECONDS",
                       help="how long one change-feed request waits for news (1..60); a silent service is "
                            "noticed (degraded) within this plus --pvc-timeout (default 25)")
    cache.add_argument("--root-page", type=_root_page, default=1000, metavar="N",
                       help="names asked of PVC at a time when the root is listed (default 1000)")
    cache.add_argument("--scratch", type=Path, default=None, metavar="DIR",
                       help="where a workspace's outputs are written (default: CACHE_DIR/scratch; a shared "
                            "disk works: one mount at a time writes an output)")
    run = p.add_argument_group("running")
    run.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    run.add_argument("--allow-other", action="store_true", help="let other users see the mount (needs user_allow_other)")
    run.add_argument("--log-level", default=os.environ.get("PRODFS_LOG_LEVEL", "info"),
                     choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-file", type=Path, default=None, help="log here instead of stderr")
    run.add_argument("-o", dest="o", action="append", default=[], metavar="OPTS",
                     help="comma-separated options in mount(8) form (cache_dir=...,pin=...)")
    run.add_argument("--exit-when-unused", type=Path, default=None, metavar="USERS_DIR",
                     help="unmount once no process recorded in USERS_DIR is alive (the shared mount of a "
                          "`prodfs exec` context; see docs/exec.md)")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


def expand_o_options(words: list[str]) -> list[str]:
    """Turn ``-o`` words into long options: ``cache_dir=/x`` -> ``--cache-dir /x``."""
    out: list[str] = []
    for group in words:
        for word in filter(None, group.split(",")):
            key, eq, value = word.partition("=")
            if key in IGNORED_O or key.startswith("x-") or key.startswith("comment="):
                continue
            opt = "--" + key.replace("_", "-")
            if key in MOUNT_FLAGS and not eq:
                out.append(opt)
            elif key in ("pvc", "url"):
                out += ["--pvc", value]
            else:
                out += [opt, value] if eq else [opt]
    return out


_TIME_OPTIONS = ("--pin", "--as-of", "--at")
_RELATIVE = re.compile(r"-\d+[smhdw]")


def join_time_values(argv: list[str]) -> list[str]:
    """``--pin -3d`` -> ``--pin=-3d``: argparse would take ``-3d`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _TIME_OPTIONS and i + 1 < len(argv) and _RELATIVE.fullmatch(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out
