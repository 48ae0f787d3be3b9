"""The README's first command, unattended: a service, the demo show, a mount; then read and unmount."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.mount import prodfs, wait_gone

REPO = Path(__file__).resolve().parents[2]
LGT = "spies:100:10-lgt:walter"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_demo_command(tmp_path):
    data, mnt = tmp_path / "data", tmp_path / "p"
    env = dict(os.environ, PRODFS_DEMO_DATA=str(data), PRODFS_DEMO_MOUNT=str(mnt),
               PRODFS_DEMO_PORT=str(_free_port()))
    res = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600, stdin=subprocess.DEVNULL)
    pid_file = data / "pvc.pid"
    try:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        assert "Try:" in res.stdout
        assert os.path.ismount(mnt)
        assert LGT in os.listdir(mnt)
        # compose in a child process, as a DCC would: USD memory-maps crate files,
        # and a mapping held by this process would keep the mount busy
        code = ("import sys; from pxr import Usd; s = Usd.Stage.Open(sys.argv[1]); "
                "print(s.GetPrimAtPath('/walter').GetAttribute('demo:model').Get())")
        out = subprocess.run([sys.executable, "-c", code, str(mnt / LGT / "walter.usda")],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip().startswith("spies:asset:walter-model@")
        # a second run reuses the service and the show, and leaves the mount alone
        again = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=600, stdin=subprocess.DEVNULL)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "already" in again.stdout + again.stderr
    finally:
        umount = prodfs("umount", str(mnt), check=False)
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
                wait_gone(pid)
            except ProcessLookupError:
                pass
    assert umount.returncode == 0, umount.stderr
    assert not os.path.ismount(mnt)
