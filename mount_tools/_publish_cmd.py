"""``prodfs publish MNT/PRI``: a workspace output's tree becomes a new version (docs/outputs.md).

The daemon of the mount does the work (it knows the tree and what the mount
served): the request goes in with setxattr on the control directory, under a
name of its own, and the answer comes back with getxattr of the same name.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys

from ._mounts import QuietError, find_mount_of, with_timeout
from ._output import add_command, answer

__all__ = ["add_parser", "cmd_publish"]

PUBLISH_XATTR = "user.prodfs.publish."
EXIT_REFUSED = 8
PUBLISH_TIMEOUT = 24 * 3600.0  # an upload of a large tree takes what it takes


def cmd_publish(opts: argparse.Namespace) -> int:
    mnt, rel = find_mount_of(opts.path)
    name = rel.split("/", 1)[0]
    if rel in (".", "") or name == ".prodfs" or "/" in rel.strip("/"):
        raise QuietError(f"publish takes an output's directory, e.g. {mnt}/spies:100:10-lgt:walter", 2)
    request = {"name": name, "labels": opts.label or [], "message": opts.message or "", "dry_run": opts.dry_run}
    key = PUBLISH_XATTR + secrets.token_hex(8)
    control = os.path.join(mnt, ".prodfs")

    def run() -> dict:
        os.setxattr(control, key, json.dumps(request).encode())
        return json.loads(os.getxattr(control, key))

    try:
        doc = with_timeout(run, PUBLISH_TIMEOUT)
    except OSError as exc:
        raise QuietError(f"{mnt}: the mount cannot publish ({exc.strerror}); is it a workspace mount?", 5) from None
    if doc.get("error"):
        if opts.json:
            answer(opts, doc, print)
        raise QuietError(f"publish refused ({doc.get('code')}): {doc['error']}; the output's tree is kept as it is",
                         EXIT_REFUSED)
    return answer(opts, doc, _human)


def _human(doc: dict) -> None:
    deps = ", ".join(doc.get("dependencies") or []) or "none"
    base = doc.get("base") or "none"
    if doc.get("dry_run"):
        print(f"would publish {doc['pri']}: {doc['entries']} entries, {doc['files_to_upload']} written files, "
              f"from version {base}")
        print(f"  dependencies: {deps}")
        return
    print(doc["ref"])  # the one line on stdout, for scripts
    print(f"  {doc['entries']} entries, from version {base}; dependencies: {deps}", file=sys.stderr)


def add_parser(sub: object) -> None:
    p = add_command(sub, "publish", "publish a workspace output's tree as a new version", cmd_publish)
    p.add_argument("path", help="the output's directory in a workspace mount: MNT/PRI")
    p.add_argument("--label", "-l", action="append", metavar="L", help="move this label to the new version")
    p.add_argument("--message", "-m", metavar="MSG", help="what changed")
    p.add_argument("--dry-run", action="store_true", help="say what would be published and its dependencies")
