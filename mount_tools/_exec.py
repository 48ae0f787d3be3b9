"""``prodfs exec``: run a command in which the root path (``/p``) is a view in one context.

One daemon per context, shared by every ``prodfs exec`` of that context: it
serves ``CONTEXT_DIR/mnt`` in the machine's mount namespace, and each command
runs in a private mount namespace where that mount is bound onto the root
path. See docs/exec.md.

A context directory (``/run/prodfs/exec/<key>/`` as root; ``$PRODFS_EXEC_DIR``
overrides the base) holds ``context.json`` (the options), ``lock`` (flock),
``mnt/`` (the daemon's mountpoint) and ``users/`` (one record per running
``prodfs exec``, see prodfs/mount/users.py). The daemon logs to
``CACHE_DIR/log/exec-<key>.log``, which outlives the context: the last
``prodfs exec`` of a context removes its directory, and every ``prodfs exec``
removes those of contexts nothing uses any more (left by a killed wrapper,
whose daemon unmounted itself).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prodfs.mount.options import default_cache_dir
from prodfs.mount.users import (
    LOCK_NAME, live_records, lock, mount_namespace, namespaces_in_use, proc_start, try_lock,
)

from . import _namespace
from ._mounts import QuietError, force_unmount, is_dead, prodfs_mounts, read_control, unmount

__all__ = ["add_parser", "cmd_exec", "exec_base", "exec_contexts", "context_key", "NAMESPACE_EXIT"]

NAMESPACE_EXIT = 7  # cannot make a mount namespace
DEFAULT_ROOT = "/p"

StartMount = Callable[[list[str]], int]


def exec_base() -> Path:
    """Where the context directories live."""
    if os.environ.get("PRODFS_EXEC_DIR"):
        return Path(os.environ["PRODFS_EXEC_DIR"])
    if os.geteuid() == 0:
        return Path("/run/prodfs/exec")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"], "prodfs", "exec")
    return Path(os.path.expanduser("~/.cache/prodfs/exec"))


def context_options(opts: argparse.Namespace) -> dict:
    return {
        "pvc": opts.pvc,
        "workspace": opts.workspace,
        "snapshot": opts.snapshot,
        "pin": opts.pin,
        "roots": list(opts.root),
        "strategy": opts.strategy,
        "prefer": list(opts.prefer),
        "overrides": list(opts.override),
        "cache_dir": str(Path(opts.cache_dir or default_cache_dir()).absolute()),
    }


def context_key(options: dict) -> str:
    canonical = json.dumps(options, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def log_path(options: dict, cdir: Path) -> Path:
    """Where a context's daemon logs: in the cache's log directory, as `prodfs mount` does."""
    return Path(options["cache_dir"], "log", f"exec-{cdir.name}.log")


def _mount_args(options: dict, cdir: Path, opts: argparse.Namespace) -> list[str]:
    log = log_path(options, cdir)
    log.parent.mkdir(parents=True, exist_ok=True)
    raw = [str(cdir / "mnt"), "--pvc", options["pvc"], "--cache-dir", options["cache_dir"],
           "--log-file", str(log), "--log-level", opts.log_level,
           "--exit-when-unused", str(cdir / "users")]
    for flag, key in (("--workspace", "workspace"), ("--snapshot", "snapshot"), ("--pin", "pin"),
                      ("--strategy", "strategy")):
        if options[key]:
            raw.append(f"{flag}={options[key]}")
    for flag, key in (("--root", "roots"), ("--prefer", "prefer"), ("--override", "overrides")):
        for value in options[key]:
            raw.append(f"{flag}={value}")
    if opts.token_file:
        raw += ["--token-file", opts.token_file]
    if opts.cache_size is not None:
        raw += ["--cache-size", str(opts.cache_size)]
    if opts.allow_other:
        raw.append("--allow-other")
    return raw


def _ensure_daemon(cdir: Path, options: dict, opts: argparse.Namespace, start_mount: StartMount) -> int | None:
    """Under the lock: the context's daemon serving ``cdir/mnt`` (reused, or started); its pid."""
    mnt = str(cdir / "mnt")
    if is_dead(mnt):
        force_unmount(mnt)
    if mnt not in prodfs_mounts():
        start_mount(_mount_args(options, cdir, opts))
    try:
        return int(read_control(mnt, "stats.json")["pid"])
    except Exception:  # noqa: BLE001 - only used to wait for the daemon at the end
        return None


def _unused(cdir: Path) -> bool:
    """Under the context's lock: nothing serves or uses ``cdir`` any more (a dead mount is recovered)."""
    mnt = str(cdir / "mnt")
    if is_dead(mnt):
        force_unmount(mnt)
    return mnt not in prodfs_mounts() and not live_records(cdir / "users", prune=True)


def sweep(base: Path, keep: str | None = None) -> list[str]:
    """Remove the context directories under ``base`` that nothing uses (but ``keep``); their names.

    A directory is removed holding its lock, and a `prodfs exec` that waited
    on that lock finds its lock file unlinked and starts over (`_locked_context`)."""
    removed = []
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return removed
    for name in names:
        cdir = base / name
        if name == keep or not (cdir / "context.json").exists():
            continue
        try:
            fd = try_lock(cdir / LOCK_NAME)
        except OSError:
            continue
        if fd is None:
            continue  # in use right now
        try:
            if _unused(cdir):
                shutil.rmtree(cdir, ignore_errors=True)
                removed.append(name)
        except (OSError, QuietError):
            pass  # looked at again by the next prodfs exec
        finally:
            os.close(fd)
    return removed


def _still_linked(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _write_record(users: Path, rec: dict) -> Path:
    path = users / f"{rec['wrapper_pid']}-{rec['child_pid']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, sort_keys=True))
    os.replace(tmp, path)
    return path


def _child(r: int, w: int, go: int, mnt: str, root: str, cmd: list[str]) -> None:  # pragma: no cover - after fork
    """Enter the namespace, bind the view, say so on ``w``; run ``cmd`` once the parent has registered us
    (a byte on ``go``; end of file there means the wrapper died first, and nothing runs)."""
    os.close(r)
    try:
        _namespace.enter_private_namespace()
        _namespace.bind(mnt, root)
        with contextlib.suppress(OSError):
            os.chdir(os.getcwd())  # a working directory under the root path now means the view
    except _namespace.NamespaceError as exc:
        os.write(w, f"error: {exc}\n".encode())
        os._exit(NAMESPACE_EXIT)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        os.write(w, f"error: {exc!r}\n".encode())
        os._exit(1)
    os.write(w, b"ready\n")
    os.close(w)
    if os.read(go, 1) != b"g":
        os._exit(1)
    os.close(go)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvp(cmd[0], cmd)
    except FileNotFoundError:
        print(f"prodfs: error: {cmd[0]}: command not found", file=sys.stderr)
        os._exit(127)
    except OSError as exc:
        print(f"prodfs: error: cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(126)


def _read_line(fd: int) -> str:
    data = b""
    with os.fdopen(fd, "rb") as f:
        while not data.endswith(b"\n"):
            chunk = f.read(4096)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").strip()


def _in_terminal_foreground() -> bool:
    """True when this process group is the foreground group of its controlling terminal."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False  # no controlling terminal: nothing else delivers the signal
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def cmd_exec(opts: argparse.Namespace, cmd: list[str], start_mount: StartMount) -> int:
    if not cmd:
        raise QuietError("exec takes a command after --: prodfs exec [context options] -- CMD [ARGS...]", 2)
    if opts.snapshot and (opts.workspace or opts.root or opts.strategy or opts.override or opts.prefer or opts.pin):
        raise QuietError("--snapshot fixes the whole context: it takes no --workspace/--root/--strategy/--prefer/"
                         "--override/--pin", 2)
    root = os.path.abspath(opts.at or os.environ.get("PRODFS_ROOT") or DEFAULT_ROOT)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise QuietError(f"the root path {root} does not exist and cannot be made: {exc.strerror}", 3) from None
    if not os.path.isdir(root):
        raise QuietError(f"the root path {root} is not a directory", 3)
    try:
        _namespace.probe()  # before a daemon is started for nothing
    except _namespace.NamespaceError as exc:
        raise QuietError(str(exc), NAMESPACE_EXIT) from None

    options = context_options(opts)
    key = context_key(options)
    cdir = exec_base() / key[:16]
    users = cdir / "users"
    sweep(exec_base(), keep=cdir.name)

    with _locked_context(cdir, key, options):
        daemon_pid = _ensure_daemon(cdir, options, opts, start_mount)
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(go_w)
            _child(r, w, go_r, str(cdir / "mnt"), root, cmd)
        os.close(w)
        os.close(go_r)
        said = _read_line(r)
        if said != "ready":
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1
            raise QuietError(said.removeprefix("error: ") or "the command's namespace could not be set up",
                             code if code == NAMESPACE_EXIT else 1)
        ns = mount_namespace(pid)
        record = _write_record(users, {
            "wrapper_pid": os.getpid(), "wrapper_start": proc_start(os.getpid()),
            "child_pid": pid, "child_start": proc_start(pid), "mnt_ns": ns,
            "root": root, "command": cmd, "started": time.time(),
        })
        os.write(go_w, b"g")
        os.close(go_w)

    def forward(sig: int, _frame: object) -> None:
        # a Ctrl-C on the terminal reaches the whole foreground group, CMD included: once is enough
        if sig == signal.SIGINT and _in_terminal_foreground():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the clean-up below is short: let it finish

    with lock(cdir / LOCK_NAME) as fd:
        # a process the command left behind keeps the view (and the context) alive
        if not (ns and ns in namespaces_in_use()):
            with contextlib.suppress(OSError):
                record.unlink()
        if not live_records(users, prune=True):
            mnt = str(cdir / "mnt")
            try:
                if mnt in prodfs_mounts():
                    unmount(mnt)
            except QuietError as exc:  # busy: the daemon unmounts itself once it can
                print(f"prodfs: warning: {exc}", file=sys.stderr)
            else:
                deadline = time.monotonic() + 10
                while daemon_pid and proc_start(daemon_pid) is not None and time.monotonic() < deadline:
                    time.sleep(0.02)
                if _still_linked(fd, cdir / LOCK_NAME) and _unused(cdir):
                    shutil.rmtree(cdir, ignore_errors=True)
    return _exit_status(status)


@contextlib.contextmanager
def _locked_context(cdir: Path, key: str, options: dict):
    """The context directory made (or found) and its lock held, whatever a concurrent `sweep` did."""
    while True:
        try:
            (cdir / "mnt").mkdir(parents=True, exist_ok=True)
            (cdir / "users").mkdir(exist_ok=True)
            os.chmod(cdir, 0o700 if os.geteuid() != 0 else 0o755)
            tmp = cdir / f"context.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"key": key, "options": options}, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, cdir / "context.json")
        except OSError as exc:
            raise QuietError(f"cannot prepare the context directory {cdir}: {exc}", 3) from None
        try:
            fd = os.open(cdir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue  # removed by a sweep meanwhile: make it again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_linked(fd, cdir / LOCK_NAME):
                yield
                return
        finally:
            os.close(fd)
        # removed by a sweep while we waited for its lock: make it again


def exec_contexts() -> list[dict]:
    """The contexts of ``prodfs exec`` in use on this machine, for ``prodfs status``."""
    out = []
    base = exec_base()
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return out
    mounts = set(prodfs_mounts())
    for name in names:
        cdir = base / name
        try:
            doc = json.loads((cdir / "context.json").read_text())
        except (OSError, ValueError):
            continue
        live = live_records(cdir / "users")
        mnt = str(cdir / "mnt")
        if not live and mnt not in mounts:
            continue
        out.append({
            "key": name, "context": doc.get("options", {}), "mountpoint": mnt, "mounted": mnt in mounts,
            "users": [{k: rec.get(k) for k in ("wrapper_pid", "child_pid", "root", "command", "started")}
                      for rec in live],
        })
    return out


def add_parser(sub, start_mount: StartMount) -> None:
    e = sub.add_parser(
        "exec", help="run a command in which /p is a view in one context (a private mount namespace)",
        description="Run CMD where the root path (default /p) shows the products in one context; its children "
                    "inherit the view, other processes are not affected. Exits with CMD's status (128+N if it "
                    "died of signal N), 7 if no mount namespace can be made.",
        usage="prodfs exec [--workspace W | --snapshot ID | --pin T --root R ...] [options] -- CMD [ARGS...]")
    e.set_defaults(run=None, start_mount=start_mount)
    e.add_argument("--pvc", metavar="URL", default=os.environ.get("PVC_URL", "http://127.0.0.1:8750"),
                   help="the PVC service (default: $PVC_URL or http://127.0.0.1:8750)")
    e.add_argument("--token-file", metavar="FILE", help="file holding the PVC token (default: $PVC_TOKEN)")
    ctx = e.add_argument_group("context")
    ctx.add_argument("--workspace", metavar="NAME", help="resolve in this PVC workspace, following its changes")
    ctx.add_argument("--snapshot", metavar="ID", help="exactly this snapshot's resolution (starts offline from "
                                                      "the cache when PVC is down)")
    ctx.add_argument("--pin", metavar="T", help="see the store as it was at T")
    ctx.add_argument("--root", action="append", default=[], metavar="R", help="a root product (PRI, PRI@N, PRI@LABEL)")
    ctx.add_argument("--strategy", metavar="S", help="diamond strategy")
    ctx.add_argument("--prefer", action="append", default=[], metavar="LABEL", help="label preference, in order")
    ctx.add_argument("--override", action="append", default=[], metavar="PRI@N", help="a version that always wins")
    e.add_argument("--at", metavar="PATH", default=None,
                   help=f"the root path the view appears at (default: $PRODFS_ROOT or {DEFAULT_ROOT})")
    e.add_argument("--cache-dir", type=Path, default=None, help=f"payload cache (default: {default_cache_dir()})")
    e.add_argument("--cache-size", default=None, metavar="SIZE", help="evict beyond this size (e.g. 50G)")
    e.add_argument("--allow-other", action="store_true", help="let other users' commands use the context's daemon")
    e.add_argument("--log-level", default=os.environ.get("PRODFS_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
