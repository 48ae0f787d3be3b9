"""``prodfs``: mount, unmount and inspect ProdFS mounts.

Exit codes:
  0  success
  1  unexpected error (a bug: a traceback is logged)
  2  usage error (bad option or argument)
  3  mountpoint problem: missing, not a directory, busy, cannot unmount
  4  the PVC service is unreachable, or the context (workspace, snapshot) is unknown
  5  not a ProdFS mount / nothing to report
  6  fsck found corrupt payloads in the cache (they were removed, and are refetched when next read)
  7  exec: cannot make a mount namespace (not permitted, or user namespaces disabled)
  8  publish: refused or failed (not an output, service down, a conflict); the output's tree is kept
  exec otherwise exits with its command's status (128+N if it died of signal N; 127: command not found)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from prodfs.mount.options import add_mount_options, default_cache_dir, expand_o_options, join_time_values

from ._context_cmds import add_parsers
from ._exec import add_parser as add_exec_parser
from ._exec import cmd_exec, exec_contexts
from ._mounts import (
    QuietError,
    find_mount_of,
    force_unmount,
    get_control_xattr,
    is_dead,
    prodfs_mounts,
    read_control,
    unmount,
)
from ._output import add_command, answer
from ._publish_cmd import add_parser as add_publish_parser

__all__ = ["main"]

READY_TIMEOUT = 120.0


# -- mount -----------------------------------------------------------------
def _check_mountpoint(path: str) -> None:
    if is_dead(path):
        print(f"prodfs: {path}: recovering a dead mount (its daemon is gone)", file=sys.stderr)
        force_unmount(path)
    if not os.path.isdir(path):
        raise QuietError(f"mountpoint {path} does not exist or is not a directory", 3)
    if os.path.ismount(path):
        raise QuietError(f"mountpoint {path} is busy: something is already mounted there", 3)


def _check_context_options(opts: argparse.Namespace) -> None:
    """Refuse a malformed time or PRI here, before a daemon is started."""
    from pvc_client import InvalidInput, parse_ref, parse_time

    try:
        if opts.pin and opts.pin != "none":
            parse_time(opts.pin)
        for r in opts.root + opts.override:
            parse_ref(r)
    except InvalidInput as exc:
        raise QuietError(str(exc), 2) from None


def cmd_mount(opts: argparse.Namespace, raw: list[str]) -> int:
    mnt = os.path.abspath(opts.mountpoint)
    _check_mountpoint(mnt)
    if opts.snapshot and (opts.workspace or opts.root or opts.strategy or opts.override or opts.prefer):
        raise QuietError("--snapshot fixes the whole context: it takes no --workspace/--root/--strategy/--prefer/--override", 2)
    _check_context_options(opts)
    if opts.foreground:
        from prodfs.mount.daemon import main as daemon_main

        return daemon_main(raw)
    log_file = opts.log_file
    if log_file is None:
        log_dir = Path(opts.cache_dir or default_cache_dir(), "log")
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = log_dir / ((mnt.strip("/").replace("/", "-") or "root") + ".log")
        raw = raw + ["--log-file", str(log_file)]
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prodfs.mount.daemon", *raw, "--ready-fd", str(w)],
        pass_fds=(w,), start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(w)
    answer = b""
    deadline = time.monotonic() + READY_TIMEOUT
    with os.fdopen(r, "rb") as pipe:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], 1.0)
            if ready:
                chunk = os.read(pipe.fileno(), 4096)
                if not chunk:
                    break
                answer += chunk
                if answer.endswith(b"\n"):
                    break
    text = answer.decode(errors="replace").strip()
    if text == "ready":
        return 0
    if text.startswith("error: "):
        msg = text[7:]
        code = 3 if "cannot mount" in msg else 4 if "PVC" in msg or "load the context" in msg or "not found" in msg.lower() else 1
        raise QuietError(msg, code)
    proc.kill()
    raise QuietError(f"the daemon did not start (see {log_file})", 1)


# -- umount ----------------------------------------------------------------
def cmd_umount(opts: argparse.Namespace) -> int:
    mnt = os.path.abspath(opts.mountpoint)
    if is_dead(mnt):
        force_unmount(mnt)
        print(f"prodfs: {mnt}: removed a dead mount", file=sys.stderr)
        return 0
    if mnt not in prodfs_mounts():
        raise QuietError(f"{mnt} is not a ProdFS mount", 5)
    pid = None
    try:
        pid = read_control(mnt, "stats.json", timeout=3).get("pid")
    except Exception:  # noqa: BLE001 - a sick mount is still unmounted
        pass
    unmount(mnt, lazy=opts.lazy)
    # wait for the daemon to finish its clean-up, so that a remount right
    # after finds the cache free
    deadline = time.monotonic() + 10
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return 0


# -- status ----------------------------------------------------------------
def cmd_status(opts: argparse.Namespace) -> int:
    mounts = [os.path.abspath(opts.mountpoint)] if opts.mountpoint else prodfs_mounts()
    report = []
    for m in mounts:
        entry: dict = {"mountpoint": m}
        if is_dead(m):
            entry.update(health="dead", error="daemon gone: run prodfs umount or prodfs mount again")
        elif m not in prodfs_mounts():
            raise QuietError(f"{m} is not a ProdFS mount", 5)
        else:
            try:
                entry["stats"] = read_control(m, "stats.json")
                entry["context"] = read_control(m, "context.json")
                entry["health"] = "degraded" if entry["stats"].get("degraded") else "ok"
            except Exception as exc:  # noqa: BLE001 - report, don't die
                entry.update(health="unresponsive", error=str(exc))
        report.append(entry)
    doc: dict = {"mounts": report}
    if not opts.mountpoint:
        doc["exec"] = exec_contexts()
    return answer(opts, doc, lambda doc: _show_status(doc["mounts"], doc.get("exec", [])))


def _show_status(report: list[dict], contexts: list[dict] = ()) -> None:
    if not report and not contexts:
        print("no ProdFS mounts")
    for e in report:
        print(f"{e['mountpoint']}: {e['health']}")
        if "stats" in e:
            s, c = e["stats"], e["context"]
            print(f"  pvc {c.get('pvc')}  context {json.dumps(c.get('context'), sort_keys=True)}")
            cache = s.get("cache", {})
            print(f"  pid {s.get('pid')}  up {s.get('uptime')}s  products {s.get('products')}  resolved {s.get('resolved')}"
                  f"  conflicts {s.get('conflicts')}")
            print(f"  cache {cache.get('bytes', 0)} bytes in {cache.get('blobs', 0)} blobs, hit ratio {s.get('cache_hit_ratio')}"
                  f"  pvc requests {s.get('pvc_requests')}  errors {s.get('errors')}")
            if not s.get("zero_open"):
                print("  every open and listing goes through the daemon (zero-message opens are off: see its log)")
            for o in c.get("outputs") or []:
                where = o.get("read_only") or o.get("scratch") or "not started"
                base = f"from version {o['base']}" if o.get("base") else "new"
                print(f"  output {o['pri']} ({base}): {where}")
        elif "error" in e:
            print(f"  {e['error']}")
    if contexts:
        print("prodfs exec contexts:")
    for c in contexts:
        shown = {k: v for k, v in c["context"].items() if v}
        print(f"  {c['key']}  {c['mountpoint']}{'' if c['mounted'] else ' (not mounted)'}")
        print(f"    context {json.dumps(shown, sort_keys=True)}")
        for u in c["users"]:
            print(f"    wrapper {u['wrapper_pid']}  child {u['child_pid']}  at {u['root']}  "
                  f"{' '.join(u.get('command') or [])}")


# -- why / conflicts -------------------------------------------------------
def cmd_why(opts: argparse.Namespace) -> int:
    mnt, rel = find_mount_of(opts.path)
    if rel in (".", ""):
        raise QuietError("why takes a path under a product, e.g. /p/spies:100:10-lgt:walter/walter.usd", 2)
    name = rel.split("/", 1)[0]
    doc = get_control_xattr(mnt, "user.prodfs.why." + name)

    def human(doc: dict) -> None:
        print(f"{opts.path}")
        print(f"  name       {doc.get('name')}  ({doc.get('kind')})")
        print(f"  context    {doc.get('context_description')}")
        if doc.get("error"):
            print(f"  result     {doc['error']}")
            return
        print(f"  candidates {', '.join(str(c) for c in doc.get('candidates', [])) or '-'}")
        for r in doc.get("requests", []):
            print(f"  asked      {r.get('pri')}@{r.get('number')} by {r.get('dependent') or 'root'} ({r.get('hops')} hops)")
        if doc.get("conflict"):
            print(f"  conflict   {doc['conflict'].get('message')}")
        print(f"  rule       {doc.get('rule')}")
        print(f"  result     {doc.get('ref')}")

    return answer(opts, doc, human)


def cmd_conflicts(opts: argparse.Namespace) -> int:
    def human(doc: dict) -> None:
        conflicts = doc.get("conflicts", [])
        if not conflicts:
            print("no conflicts")
        for c in conflicts:
            print(c.get("message") or json.dumps(c))

    return answer(opts, read_control(os.path.abspath(opts.mountpoint), "conflicts.json"), human)


def cmd_fsck(opts: argparse.Namespace) -> int:
    from prodfs.storage.blob_cache import check_cache

    cache_dir = Path(opts.cache_dir or default_cache_dir())
    if not (cache_dir / "blobs").is_dir():
        raise QuietError(f"{cache_dir} is not a ProdFS payload cache (no blobs/ in it)", 5)
    show = sys.stderr.isatty() and not opts.json

    def progress(done: int, total: int) -> None:
        if show and (done % 100 == 0 or done == total):
            print(f"\rchecked {done}/{total} payloads", end="\n" if done == total else "", file=sys.stderr)

    report = check_cache(cache_dir, progress)

    def human(doc: dict) -> None:
        print(f"{cache_dir}: {report.blobs} payloads, {report.bytes} bytes checked, {len(report.corrupt)} corrupt")
        for sha in report.corrupt:
            print(f"  removed {sha}")

    answer(opts, {"cache_dir": str(cache_dir), "blobs": report.blobs, "bytes": report.bytes,
                  "corrupt": report.corrupt}, human)
    return 6 if report.corrupt else 0


# -- parser ----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prodfs", description="ProdFS: the product filesystem.",
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    # each command names its function (`run`); `mount` also gets the raw arguments, for the daemon
    add_mount_options(sub.add_parser("mount", help="mount the PRI namespace"))
    u = add_command(sub, "umount", "unmount (also a dead mount)", cmd_umount, json=False)
    u.add_argument("mountpoint")
    u.add_argument("--lazy", action="store_true", help="detach now, finish when no longer busy")
    add_command(sub, "status", "show mounts, contexts, cache use and health", cmd_status
                ).add_argument("mountpoint", nargs="?")
    add_command(sub, "why", "explain what a path resolves to, and why", cmd_why).add_argument("path")
    add_command(sub, "conflicts", "list the diamonds of a mount's resolution", cmd_conflicts
                ).add_argument("mountpoint")
    add_command(sub, "fsck", "hash every cached payload again and remove the corrupt ones", cmd_fsck
                ).add_argument("--cache-dir", type=Path, default=None,
                               help=f"the cache to check (default: {default_cache_dir()})")
    add_parsers(sub)
    add_publish_parser(sub)
    add_exec_parser(sub, _mount_from_args)
    return p


def _mount_from_args(raw: list[str]) -> int:
    """``prodfs mount RAW...`` from code (``prodfs exec`` starts its context's daemon this way)."""
    return cmd_mount(build_parser().parse_args(["mount", *raw]), raw)


def _split_exec(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``exec OPTIONS -- CMD...``: the command is never parsed (nor its times joined)."""
    if not argv or argv[0] != "exec":
        return argv, None
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def main(args: list[str] | None = None) -> int:
    argv, command = _split_exec(list(sys.argv[1:] if args is None else args))
    argv = join_time_values(argv)
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if opts.command == "exec":
            return cmd_exec(opts, command or [], opts.start_mount)
        if opts.command == "mount":
            raw = argv[1:]
            if opts.o:
                opts = parser.parse_args(argv + expand_o_options(opts.o))
            return cmd_mount(opts, raw)
        return opts.run(opts)
    except QuietError as exc:
        print(f"prodfs: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
