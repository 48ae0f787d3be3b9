"""A private mount namespace for ``prodfs exec``: unshare(2) and mount(2) through libc.

Python 3.11 has no ``os.unshare``; these are the few calls ``prodfs exec``
needs, each failure turned into a :class:`NamespaceError` that says why.
"""

from __future__ import annotations

import ctypes
import errno
import os

__all__ = ["NamespaceError", "unshare", "mount", "enter_private_namespace", "bind", "probe", "why_not",
           "CLONE_NEWNS", "CLONE_NEWUSER"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


class NamespaceError(Exception):
    """No private mount namespace could be made (``prodfs exec`` exits 7)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    enc = (lambda s: None if s is None else os.fsencode(s))
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, None), f"mount {target}")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def why_not(exc: OSError, unprivileged: bool) -> str:
    """One line: why unshare failed, and what an administrator can do about it."""
    if not unprivileged:
        if exc.errno == errno.EPERM:
            return "cannot make a mount namespace: not allowed (needs CAP_SYS_ADMIN; a container may forbid unshare)"
        return f"cannot make a mount namespace: {exc.strerror or exc}"
    hints = []
    max_ns = _read("/proc/sys/user/max_user_namespaces")
    if max_ns == "0" or exc.errno in (errno.ENOSPC, errno.EUSERS):
        hints.append(f"user namespaces are exhausted or disabled (/proc/sys/user/max_user_namespaces is {max_ns})")
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        hints.append("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)")
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        hints.append("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)")
    if exc.errno == errno.EINVAL:
        hints.append("the process cannot enter a new user namespace (threaded, or in a chroot)")
    if not hints:
        hints.append(exc.strerror or str(exc))
    return ("cannot make a mount namespace as an unprivileged user: " + "; ".join(hints)
            + " (run as root, or let users create user namespaces)")


def enter_private_namespace() -> None:
    """Move this process into a mount namespace of its own, whose mounts propagate nowhere.

    As root: a new mount namespace. Otherwise: a new user namespace (the
    caller's uid and gid mapped to themselves) holding a new mount namespace."""
    uid, gid = os.getuid(), os.getgid()
    unprivileged = os.geteuid() != 0
    if not unprivileged:
        try:
            unshare(CLONE_NEWNS)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise NamespaceError(why_not(exc, False)) from None
            # root without CAP_SYS_ADMIN (a container): a user namespace may still be allowed
            try:
                unshare(CLONE_NEWUSER | CLONE_NEWNS)
            except OSError as exc2:
                raise NamespaceError(why_not(exc, False) + "; and " + why_not(exc2, True).split(": ", 1)[1]) from None
            unprivileged = True
    else:
        try:
            unshare(CLONE_NEWUSER | CLONE_NEWNS)
        except OSError as exc:
            raise NamespaceError(why_not(exc, True)) from None
    try:
        if unprivileged:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as exc:
        raise NamespaceError(f"cannot set up the private mount namespace: {exc}") from None


def bind(source: str, target: str) -> None:
    """Bind ``source`` (and what is mounted under it) onto ``target``, in this namespace only."""
    try:
        mount(source, target, None, MS_BIND | MS_REC)
    except OSError as exc:
        raise NamespaceError(f"cannot bind the context's view onto {target}: {exc.strerror or exc}") from None


def probe() -> None:
    """Try :func:`enter_private_namespace` in a throwaway child: raise its error here, before anything starts."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        code = 0
        try:
            enter_private_namespace()
        except NamespaceError as exc:
            os.write(w, str(exc).encode())
            code = 1
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, f"cannot make a mount namespace: {exc!r}".encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode(errors="replace")
    os.waitpid(pid, 0)
    if message:
        raise NamespaceError(message)
