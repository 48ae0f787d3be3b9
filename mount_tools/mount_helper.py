"""``mount.fuse.prodfs``: the helper mount(8) runs for ``-t fuse.prodfs`` and fstab lines.

    mount -t fuse.prodfs SOURCE MOUNTPOINT [-o OPTS]
    /etc/fstab:  spies-lgt  /p  fuse.prodfs  pvc=http://pvc:8750,cache_dir=/var/cache/prodfs,_netdev  0 0

SOURCE is a workspace name, ``live`` (no workspace: newest versions, or as of
``pin=``), or ``snapshot:ID``. Every long option of ``prodfs mount`` is an
``-o`` option with ``_`` for ``-``. Exit codes are those of ``prodfs mount``.
"""

from __future__ import annotations

import sys

from . import cli

__all__ = ["main", "translate"]


def translate(argv: list[str]) -> list[str]:
    """mount(8)'s calling convention -> ``prodfs mount`` arguments."""
    positional: list[str] = []
    opts: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "-o":
            opts.append(next(it, ""))
        elif a.startswith("-o") and len(a) > 2:
            opts.append(a[2:])
        elif a == "-t":
            next(it, None)
        elif a in ("-s", "-f", "-n", "-v"):  # sloppy, fake, no-mtab, verbose: nothing to do
            continue
        else:
            positional.append(a)
    if len(positional) != 2:
        raise SystemExit("usage: mount.fuse.prodfs SOURCE MOUNTPOINT [-o OPTIONS]")
    source, mountpoint = positional
    out = ["mount", mountpoint]
    if source.startswith("snapshot:"):
        out += ["--snapshot", source.split(":", 1)[1]]
    elif source not in ("live", "prodfs", "none"):
        out += ["--workspace", source]
    for o in opts:
        out += ["-o", o]
    return out


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if args is None else args)
    try:
        return cli.main(translate(argv))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
