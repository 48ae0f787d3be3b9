"""``prodfs exec``: one context per process, through real processes, namespaces and mounts.

One service and one set of products per module: ``exec-shot@N`` depends on
``exec-model@N`` (N = 1, 2), and its layer references the model by an
**absolute** versionless path under the root path (``ROOT/exec-model/model.usda``),
as a DCC writes them. Snapshot A freezes shot@1, snapshot B shot@2: in a
command run under ``prodfs exec --snapshot A`` that one absolute path means
model@1, under B model@2, at the same time, while the test process itself
sees an empty directory there.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import trio

from mount_tools import _namespace
from prodfs.resolution import Context, create_snapshot
from pvc_client import PVCClient
from tests.support.helpers import Publisher
from tests.support.mount import BAD_LOG, PRODFS, wait_for
from tests.support.service import running_service

MODEL, SHOT = "exec-model", "exec-shot"


class Env:
    def __init__(self, tmp: Path, url: str, snaps: dict[str, str]) -> None:
        self.tmp = tmp
        self.url = url
        self.snaps = snaps
        self.root = tmp / "p"
        self.cache = tmp / "cache"
        self.base = tmp / "exec"
        self.env = {**os.environ, "PRODFS_EXEC_DIR": str(self.base)}

    def argv(self, *context: str, cmd: list[str], at: Path | None = None) -> list[str]:
        return [*PRODFS, "exec", "--pvc", self.url, "--cache-dir", str(self.cache), "--at", str(at or self.root),
                *context, "--", *cmd]

    def run(self, *context: str, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*context, cmd=cmd), env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def popen(self, *context: str, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*context, cmd=cmd), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kw)

    def status(self) -> dict:
        res = subprocess.run([*PRODFS, "status", "--json"], env=self.env, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def exec_mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if str(self.base) in line.split()[4]]


def _publish(pub: Publisher, tmp: Path, root: Path) -> None:
    for n in (1, 2):
        model = tmp / "src" / f"model{n}"
        model.mkdir(parents=True)
        (model / "data.txt").write_text(f"{MODEL}@{n}\n")
        (model / "model.usda").write_text(textwrap.dedent(f"""\
            #usda 1.0
            (
                defaultPrim = "walter"
            )
            def Xform "walter"
            {{
                def Sphere "body"
                {{
                    double radius = {n}
                }}
            }}
            """))
        assert pub.publish(MODEL, model)["number"] == n
    for n in (1, 2):
        shot = tmp / "src" / f"shot{n}"
        shot.mkdir(parents=True)
        (shot / "shot.usda").write_text(textwrap.dedent(f"""\
            #usda 1.0
            def "walter" (
                references = @{root}/{MODEL}/model.usda@
            )
            {{
            }}
            """))
        assert pub.publish(SHOT, shot, dependencies=[f"{MODEL}@{n}"])["number"] == n


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exec")
    with running_service(tmp / "pvc-data") as service:
        pub = Publisher(service.url)
        _publish(pub, tmp, tmp / "p")

        async def snap(n: int) -> str:
            async with PVCClient(service.url) as client:
                return (await create_snapshot(client, Context(roots=(f"{SHOT}@{n}",), strategy="nearest")))["id"]

        env = Env(tmp, service.url, {"A": trio.run(snap, 1), "B": trio.run(snap, 2)})
        env.service = service
        env.root.mkdir()
        try:
            yield env
            # a daemon whose users all died unmounts itself within a second or two
            wait_for(lambda: env.exec_mounts() == [], timeout=10)
            logs = {str(p): p.read_text(errors="replace") for p in env.tmp.rglob("log/exec-*.log")}
            assert logs, "the context daemons logged nothing"
            bad = {name: BAD_LOG.findall(text) for name, text in logs.items() if BAD_LOG.search(text)}
            assert not bad, f"context daemon logs have unexpected errors: {bad}"
        finally:
            for m in env.exec_mounts():
                subprocess.run(["umount", "-l", m], capture_output=True)


def _wait_for_lines(proc: subprocess.Popen, n: int) -> list[str]:
    lines = [proc.stdout.readline().strip() for _ in range(n)]
    assert all(lines), (lines, proc.stderr.read() if proc.poll() is not None else "")
    return lines


def test_concurrent_snapshots_see_their_own_versions_at_one_path(ex):
    go = ex.tmp / "go"
    data = ex.root / MODEL / "data.txt"
    cmd = ["sh", "-c", f"cat {data}; cat {ex.root}/.prodfs/context.json | tr -d '\\n'; echo;"
                       f" while [ ! -e {go} ]; do sleep 0.05; done; cat {data}"]
    a1 = ex.popen("--snapshot", ex.snaps["A"], cmd=cmd)
    b = ex.popen("--snapshot", ex.snaps["B"], cmd=cmd)
    a2 = None
    try:
        first_a, ctx_a = _wait_for_lines(a1, 2)
        first_b, ctx_b = _wait_for_lines(b, 2)
        assert (first_a, first_b) == (f"{MODEL}@1", f"{MODEL}@2")
        assert json.loads(ctx_a)["snapshot"] == ex.snaps["A"] and json.loads(ctx_b)["snapshot"] == ex.snaps["B"]
        # a second command in context A shares A's daemon
        a2 = ex.popen("--snapshot", ex.snaps["A"], cmd=cmd)
        assert _wait_for_lines(a2, 1) == [f"{MODEL}@1"]
        # the test process is not in any of these contexts: the root path is an empty directory here
        assert os.listdir(ex.root) == []
        doc = ex.status()
        contexts = {c["context"]["snapshot"]: c for c in doc["exec"]}
        assert set(contexts) == {ex.snaps["A"], ex.snaps["B"]}
        assert sorted(u["wrapper_pid"] for u in contexts[ex.snaps["A"]]["users"]) == sorted([a1.pid, a2.pid])
        assert [u["wrapper_pid"] for u in contexts[ex.snaps["B"]]["users"]] == [b.pid]
        assert all(u["child_pid"] and u["root"] == str(ex.root) for c in doc["exec"] for u in c["users"])
        mounted = {m["mountpoint"] for m in doc["mounts"]}
        assert {c["mountpoint"] for c in doc["exec"]} <= mounted
        human = subprocess.run([*PRODFS, "status"], env=ex.env, capture_output=True, text=True).stdout
        assert "prodfs exec contexts:" in human and f"wrapper {b.pid}" in human
        go.touch()
        outs = [p.communicate(timeout=30) for p in (a1, a2, b)]
    finally:
        go.touch()
        for p in (a1, a2, b):
            if p is not None and p.poll() is None:
                p.kill()
    assert [p.returncode for p in (a1, a2, b)] == [0, 0, 0], outs
    assert [o.splitlines()[-1] for o, _ in outs] == [f"{MODEL}@1", f"{MODEL}@1", f"{MODEL}@2"]
    # the last user of a context unmounts it on the way out
    assert ex.exec_mounts() == []
    assert ex.status()["exec"] == []


USD_SCRIPT = """
import sys
from pxr import Usd
stage = Usd.Stage.Open(sys.argv[1])
print(stage.GetPrimAtPath("/walter/body").GetAttribute("radius").Get())
"""


def test_usd_composes_absolute_paths_in_each_context_and_grandchildren_inherit(ex):
    layer = ex.root / SHOT / "shot.usda"
    for snap, radius in (("A", "1.0"), ("B", "2.0")):
        # sh runs python: the stage is opened by a grandchild of prodfs exec
        script = f"{sys.executable} -c '{USD_SCRIPT}' {layer}"
        res = ex.run("--snapshot", ex.snaps[snap], cmd=["sh", "-c", script])
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == radius


def test_exit_status_is_the_commands(ex):
    snap = ex.snaps["A"]
    assert ex.run("--snapshot", snap, cmd=["sh", "-c", "exit 3"]).returncode == 3
    assert ex.run("--snapshot", snap, cmd=["sh", "-c", "kill -TERM $$"]).returncode == 128 + signal.SIGTERM
    res = ex.run("--snapshot", snap, cmd=["no-such-command-here"])
    assert res.returncode == 127 and "no-such-command-here: command not found" in res.stderr
    assert ex.exec_mounts() == []


def test_a_killed_wrapper_leaves_no_mount_behind(ex):
    proc = ex.popen("--snapshot", ex.snaps["B"], cmd=["sh", "-c", "echo up; exec sleep 60"], start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        assert len(ex.exec_mounts()) == 1
        os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and its command, as a job scheduler kills a job
        proc.wait(timeout=10)
        started = time.monotonic()
        wait_for(lambda: ex.exec_mounts() == [], timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = [p.read_text() for p in (ex.cache / "log").glob("exec-*.log")]
    assert any("no process uses this context any more: unmounting" in log for log in logs)
    # the killed wrapper's context directory stays until the next prodfs exec sweeps it
    assert [d.name for d in ex.base.iterdir()] != []
    # (the daemon holds the lock until it has exited: a sweep just before that leaves it for the next)
    wait_for(lambda: ex.run("--snapshot", ex.snaps["A"], cmd=["true"]).returncode == 0
             and list(ex.base.iterdir()) == [], timeout=10)


def test_a_context_directory_in_use_is_kept_and_an_unused_one_removed(ex):
    from mount_tools._exec import sweep

    proc = ex.popen("--snapshot", ex.snaps["A"], cmd=["sh", "-c", "echo up; exec sleep 60"], start_new_session=True)
    stale = ex.base / "0123456789abcdef"
    try:
        assert proc.stdout.readline().strip() == "up"
        (stale / "users").mkdir(parents=True)
        (stale / "mnt").mkdir()
        (stale / "context.json").write_text("{}")
        (stale / "users" / "1-2.json").write_text(json.dumps({"wrapper_pid": 1, "wrapper_start": -1,
                                                             "child_pid": 2, "child_start": -1}))
        in_use = [d.name for d in ex.base.iterdir() if d != stale]
        assert sweep(ex.base) == [stale.name]
        assert [d.name for d in ex.base.iterdir()] == in_use
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    wait_for(lambda: ex.exec_mounts() == [], timeout=10)
    wait_for(lambda: sweep(ex.base), timeout=10)  # once the daemon has exited and let go of the lock
    assert list(ex.base.iterdir()) == []


@pytest.mark.parametrize("context, message", [
    (("--workspace", "no-such-ws"), "no-such-ws"),
    (("--snapshot", "0" * 64), "0" * 16),
])
def test_an_unknown_context_is_exit_4(ex, context, message):
    res = ex.run(*context, cmd=["true"])
    assert res.returncode == 4, res.stderr
    assert res.stderr.startswith("prodfs: error: ") and message in res.stderr
    assert ex.exec_mounts() == []


# Runs argv as root without CAP_SYS_ADMIN inside a user namespace that may make no further user
# namespace (its own max_user_namespaces set to 0): no global sysctl changes, nothing else affected.
NO_NAMESPACES = """
import ctypes, os, sys, time
from mount_tools._namespace import CLONE_NEWUSER, unshare
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    unshare(CLONE_NEWUSER)
    if os.read(r, 1) != b"g":
        os._exit(99)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    assert ctypes.CDLL(None, use_errno=True).prctl(24, 21, 0, 0, 0) == 0  # PR_CAPBSET_DROP, CAP_SYS_ADMIN
    os.execvp(sys.argv[1], sys.argv[1:])
os.close(r)
while os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user"):
    time.sleep(0.005)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 65536")
os.write(w, b"g")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_no_permission_for_a_namespace_is_exit_7(ex):
    if os.geteuid() != 0:
        pytest.skip("needs root to set up a user namespace with a full uid map")
    res = subprocess.run([sys.executable, "-c", NO_NAMESPACES,
                          *ex.argv("--snapshot", ex.snaps["A"], cmd=["true"])],
                         env=ex.env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 7, res.stderr
    assert "cannot make a mount namespace" in res.stderr and "max_user_namespaces is 0" in res.stderr
    assert ex.exec_mounts() == [] and not list(ex.base.glob("*/users/*"))


def test_no_mount_namespace_is_exit_7(ex, monkeypatch, capsys):
    """unshare(2) refused (EPERM as in a locked-down container, ENOSPC with user namespaces disabled)."""
    from mount_tools import cli

    for code, unprivileged, words in ((errno.EPERM, False, "not allowed"),
                                      (errno.ENOSPC, True, "max_user_namespaces")):
        def refuse(flags, code=code):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(_namespace, "unshare", refuse)
        monkeypatch.setattr(_namespace.os, "geteuid", lambda u=unprivileged: 1000 if u else 0)
        with pytest.raises(_namespace.NamespaceError, match=words):
            _namespace.enter_private_namespace()
        monkeypatch.setattr(_namespace.os, "geteuid", lambda: 0)
        rc = cli.main(["exec", "--pvc", ex.url, "--at", str(ex.root), "--snapshot", ex.snaps["A"], "--", "true"])
        assert rc == 7
        assert "cannot make a mount namespace" in capsys.readouterr().err
    assert ex.exec_mounts() == []  # refused before a daemon was started


def test_the_context_key_is_canonical():
    from mount_tools._exec import context_key

    a = {"pvc": "http://x", "roots": ["a-b"], "snapshot": None}
    assert context_key(a) == context_key(dict(reversed(list(a.items()))))
    assert context_key(a) != context_key({**a, "roots": ["a-c"]})


def test_render_recipe_when_the_service_is_down(ex):
    """docs/exec.md: the node is prepared online by a prefetch alone; the job then runs with PVC down."""
    cache = ex.tmp / "node-cache"
    snap = ex.snaps["B"]
    common = ["--pvc", ex.url, "--cache-dir", str(cache)]
    prep = subprocess.run([*PRODFS, "prefetch", "--snapshot", snap, *common], env=ex.env, capture_output=True,
                          text=True, timeout=60)
    assert prep.returncode == 0, prep.stderr
    ex.service.stop()
    try:
        script = f"{sys.executable} -c '{USD_SCRIPT}' {ex.root}/{SHOT}/shot.usda; cat {ex.root}/{MODEL}/data.txt"
        res = subprocess.run([*PRODFS, "exec", *common, "--at", str(ex.root), "--snapshot", snap, "--",
                              "sh", "-c", script], env=ex.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["2.0", f"{MODEL}@2"]
        # a context that needs the service cannot start: exit 4
        res = subprocess.run([*PRODFS, "exec", *common, "--at", str(ex.root), "--snapshot", ex.snaps["A"], "--",
                              "true"], env=ex.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 4, res.stderr
    finally:
        ex.service.start()


NOBODY = 65534


def _as_nobody(argv: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                          env=env, capture_output=True, text=True, **kw)


def test_an_unprivileged_user_gets_a_view_where_the_machine_allows_it(ex):
    # Needs what a plain Debian machine has and a container may not: /dev/fuse open to every
    # user (for fusermount3), user namespaces, and this interpreter readable by others.
    probe = _as_nobody([sys.executable, "-c", "import os, prodfs.mount; "
                        "print(os.access('/dev/fuse', os.R_OK | os.W_OK))"],
                       {**os.environ, "PYTHONPATH": os.getcwd()}, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"an ordinary user cannot run this Python or read these sources: {probe.stderr.strip()[-200:]}")
    if probe.stdout.strip() != "True":
        pytest.skip("/dev/fuse is closed to ordinary users on this machine (fusermount3 needs it open)")
    # pytest's temporary directories are closed to other users: one of the user's own
    work = Path(tempfile.mkdtemp(prefix="prodfs-nobody."))
    root, cache, base = work / "p", work / "cache", work / "exec"
    root.mkdir()
    for d in (work, root):
        os.chown(d, NOBODY, NOBODY)
    env = {**os.environ, "HOME": str(work), "PYTHONPATH": os.getcwd(), "PRODFS_EXEC_DIR": str(base)}
    env.pop("XDG_RUNTIME_DIR", None)
    data = root / MODEL / "data.txt"
    res = _as_nobody([*PRODFS, "exec", "--pvc", ex.url, "--cache-dir", str(cache), "--at", str(root),
                      "--snapshot", ex.snaps["B"], "--", "sh", "-c", f"id -u; cat {data}"], env, timeout=60)
    try:
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [str(NOBODY), f"{MODEL}@2"]
        assert os.listdir(root) == []
        wait_for(lambda: not any(str(base) in line for line in open("/proc/self/mountinfo")), timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


COUNT_SIGINT = """
import signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda *a: got.append(1))
print("ready", flush=True)
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:
    time.sleep(0.05)
print("sigints", len(got), flush=True)
"""


def test_ctrl_c_on_the_terminal_reaches_the_command_once(ex):
    import pty

    pid, master = pty.fork()
    if pid == 0:  # the child: a session on the pseudo-terminal, prodfs exec in its foreground
        os.execvpe(PRODFS[0], ex.argv("--snapshot", ex.snaps["A"], cmd=[sys.executable, "-c", COUNT_SIGINT]),
                   ex.env)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in shown and time.monotonic() < deadline:
            shown += os.read(master, 4096)
        os.write(master, b"\x03")  # Ctrl-C: the terminal signals its foreground group
        while re.search(rb"sigints \d+\r?\n", shown) is None:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            shown += chunk
    except OSError:
        pass  # EIO: the terminal's last writer is gone
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(master)
    text = shown.decode(errors="replace")
    assert "sigints 1" in text, text
    assert os.waitstatus_to_exitcode(status) == 0
