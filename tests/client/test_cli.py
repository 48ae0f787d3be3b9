"""The ``pvc`` command line, in-process through ``main([...])`` and as the installed script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvc_client.cli import EXIT_CODES, main
from pvc_trees import describe, make_tree
from tests.support.helpers import on_a_terminal
from tests.support.service import running_service


class Pvc:
    """Runs ``main(args + --url)`` and keeps what it printed."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys
        self.out = self.err = ""

    def __call__(self, *args: str, url: bool = True) -> int:
        argv = [*args, "--url", self.url] if url else list(args)
        code = main(argv)
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        return code

    def ok(self, *args: str) -> str:
        code = self(*args)
        assert code == 0, f"pvc {' '.join(args)} -> {code}: {self.err}"
        return self.out

    def fails(self, code: int, *args: str, url: bool = True) -> str:
        assert self(*args, url=url) == code, (self.out, self.err)
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pvc: error: "), self.err
        return lines[0]


@pytest.fixture
def pvc(url: str, capsys: pytest.CaptureFixture[str]) -> Pvc:
    return Pvc(url, capsys)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_publish_inspect_label_rename_get(pvc: Pvc, pri: str, tree: Path, tmp_path: Path) -> None:
    dep = pri.replace("lgt", "tex")
    assert pvc.ok("publish", dep, str(tree)).splitlines()[-1] == f"{dep}@1"
    out = pvc.ok("publish", pri, str(tree), "-m", "first light", "--label", "published", "--dep", f"{dep}@1")
    assert out.splitlines()[-1] == f"{pri}@1"
    (tree / "geo" / "walter.usd").write_bytes(b"v2")
    assert pvc.ok("publish", pri, str(tree), "--message", "second").splitlines()[-1] == f"{pri}@2"

    rows = [line.split() for line in pvc.ok("versions", pri).splitlines()]
    assert rows[0][:2] == ["N", "CREATED"] and [r[0] for r in rows[1:]] == ["1", "2"]
    assert "published" in rows[1] and "first" in rows[1] and "published" not in rows[2]

    shown = pvc.ok("show", f"{pri}@1")
    assert shown.splitlines()[0] == f"{pri}@1"
    for text in ("first light", f"{dep}@1", "published", "latest.usd -> geo/walter.usd",
                 "geo/sub/ünïcødé naïve.txt", "-rwxr-xr-x", "drwxr-x---"):
        assert text in shown, text
    assert pvc.ok("show", pri).splitlines()[0] == f"{pri}@2"

    assert pvc.ok("label", f"{pri}@1", "approved").split() == [f"{pri}@1", "approved"]
    assert pvc.ok("label", f"{pri}@approved", "final").split() == [f"{pri}@1", "final"]
    pvc.ok("label", "--delete", pri, "final")
    assert [line.split() for line in pvc.ok("labels", pri).splitlines()] == [["approved", "1"], ["published", "1"]]
    history = pvc.ok("labels", pri, "--history", "final").splitlines()
    assert history[-1].split()[1] == "deleted"

    new = pri.replace("walter", "walt")
    assert pvc.ok("rename", pri, new).split() == [pri, "->", new]
    target = tmp_path / "fetched" / "walter"
    assert pvc.ok("get", f"{pri}@approved", str(target)).split() == [f"{new}@1", "->", str(target)]
    (tree / "geo" / "walter.usd").write_bytes(b"#usda 1.0\n" + bytes(range(256)) * 4096)
    assert describe(target) == describe(tree)


def test_json_output(pvc: Pvc, pri: str, tree: Path) -> None:
    version = json.loads(pvc.ok("publish", pri, str(tree), "--json", "--label", "published"))
    assert version["ref"] == f"{pri}@1" and version["manifest"]
    assert [v["number"] for v in json.loads(pvc.ok("versions", pri, "--json"))] == [1]
    assert json.loads(pvc.ok("show", f"{pri}@published", "--json"))["manifest"] == version["manifest"]
    assert json.loads(pvc.ok("labels", pri, "--json")) == {"published": 1}
    products = json.loads(pvc.ok("products", pri.split("-")[0], "--json"))
    assert [p["pri"] for p in products] == [pri]
    events = [json.loads(line) for line in pvc.ok("events", "--json").splitlines()]
    assert any(e["kind"] == "publish" and e["pri"] == pri for e in events)
    last = events[-1]["id"]
    assert pvc.ok("events", "--after", str(last), "--json") == ""


def test_at_and_as_of(pvc: Pvc, pri: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "state").write_text("three days ago")
    assert pvc.ok("publish", pri, str(src), "--at", "-3d").splitlines()[-1] == f"{pri}@1"
    (src / "state").write_text("today")
    pvc.ok("publish", pri, str(src))
    assert [r.split()[0] for r in pvc.ok("versions", pri, "--as-of", "-2d").splitlines()[1:]] == ["1"]
    assert pvc.ok("show", pri, "--as-of", "-1d").splitlines()[0] == f"{pri}@1"
    pvc.ok("get", pri, str(tmp_path / "then"), "--as-of", "-1d")
    pvc.ok("get", pri, str(tmp_path / "now"))
    assert (tmp_path / "then" / "state").read_text() == "three days ago"
    assert (tmp_path / "now" / "state").read_text() == "today"
    pvc.fails(3, "versions", pri, "--as-of", "-4d")
    pvc.fails(4, "publish", pri, str(src), "--at", "-1d")  # earlier than the newest version


def test_exit_codes(pvc: Pvc, pri: str, tree: Path, tmp_path: Path) -> None:
    assert "no product" in pvc.fails(3, "versions", pri)
    pvc.fails(3, "get", f"{pri}@3", str(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()
    pvc.fails(2, "versions", "no-dash-here/x")
    pvc.fails(2, "show", f"{pri}@1.2.5")
    pvc.fails(2, "versions", pri, "--as-of", "last tuesday")
    pvc.fails(2, "versions", pri, "--no-such-option")
    pvc.fails(2, "publish", pri, str(tmp_path / "missing-dir"))
    pvc.fails(2, "label", pri, "approved")  # no version given
    pvc.ok("publish", pri, str(tree))
    pvc.fails(2, "get", pri, str(tree))  # not empty
    pvc.fails(4, "rename", pri, pri)
    assert "dependency" in pvc.fails(7, "publish", pri, str(tree), "--dep", pri.replace("lgt", "zzz") + "@1")
    assert "cannot connect" in Pvc(closed_port_url(), pvc.capsys).fails(6, "versions", pri)
    assert pvc(*["--help"], url=False) == 0 and "Exit codes: 0 ok" in pvc.out
    assert all(text in " ".join(pvc.out.split()) for text in EXIT_CODES.values())
    assert pvc(url=False) == 2 and "Commands:" in pvc.err


def test_publish_several_pairs_together(pvc: Pvc, pri: str, tree: Path, tmp_path: Path) -> None:
    other, third = pri.replace("lgt", "anim"), pri.replace("lgt", "fx")
    out = pvc.ok("publish", pri, str(tree), other, str(tree), "-m", "together", "--label", "published")
    assert out.splitlines() == [f"{pri}@1", f"{other}@1"]
    assert "2 versions" in pvc.err
    first = json.loads(pvc.ok("show", f"{pri}@1", "--json"))
    for name in (pri, other):  # the shared options went to every version
        shown = json.loads(pvc.ok("show", f"{name}@published", "--json"))
        assert shown["number"] == 1 and shown["message"] == "together"
        assert shown["manifest"] == first["manifest"]
    versions = json.loads(pvc.ok("publish", pri, str(tree), third, str(tree), "--json"))
    assert [v["ref"] for v in versions] == [f"{pri}@2", f"{third}@1"]

    # refused before anything is sent: nothing of the call is published
    assert "pairs" in pvc.fails(2, "publish", pri, str(tree), other)
    pvc.fails(2, "publish", pri, str(tree), other, str(tmp_path / "missing-dir"))
    assert "twice" in pvc.fails(2, "publish", other, str(tree), other, str(tree))
    assert [line.split()[0] for line in pvc.ok("versions", other).splitlines()[1:]] == ["1"]
    assert [line.split()[0] for line in pvc.ok("versions", pri).splitlines()[1:]] == ["1", "2"]


def test_tokens_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with running_service(tmp_path / "data", tokens={"reader-token-1": ("read", "viewer")}) as svc:
        pvc = Pvc(svc.url, capsys)
        pvc.fails(5, "products")
        monkeypatch.setenv("PVC_TOKEN", "reader-token-1")
        assert pvc.ok("products") == ""
        pvc.fails(5, "publish", "tok-lgt:walter", str(make_tree(tmp_path / "src")))


def test_workspaces_and_snapshots(pvc: Pvc, pri: str, tree: Path, tmp_path: Path) -> None:
    pvc.ok("publish", pri, str(tree))
    pvc.ok("publish", pri, str(tree))
    name = pri.replace(":", "_")
    created = pvc.ok("workspace", "create", name, "--root", pri, "--prefer", "approved", "--pin", "-1h",
                     "--override", f"{pri}@1")
    assert f"{name}: revision 1" in created
    pvc.fails(4, "workspace", "create", name)
    ws = json.loads(pvc.ok("workspace", "set", name, "--override", f"{pri}@2", "--strategy", "pinned",
                           "--json"))
    assert ws["overrides"] == [f"{pri}@2"] and ws["strategy"] == "pinned" and ws["revision"] == 2
    ws = json.loads(pvc.ok("workspace", "set", name, "--remove-override", pri, "--remove-root", pri,
                           "--root", f"{pri}@1", "--json"))
    assert ws["overrides"] == [] and ws["roots"] == [f"{pri}@1"]
    pvc.fails(2, "workspace", "set", name, "--remove-root", "nope-x")
    assert json.loads(pvc.ok("workspace", "pin", name, "none", "--json"))["pin"] is None
    assert json.loads(pvc.ok("workspace", "pin", name, "2020-01-01", "--json"))["pin"].startswith("2020-01-01T23:59")
    shown = [line.split() for line in pvc.ok("workspace", "show", name).splitlines()]
    assert ["pin", "2020-01-01T23:59:59.999999Z"] in shown and ["roots", f"{pri}@1"] in shown
    history = pvc.ok("workspace", "history", name).splitlines()
    assert [row.split()[0] for row in history[1:]] == ["1", "2", "3", "4", "5"]
    pvc.fails(3, "workspace", "show", name + "_nobody")

    record = tmp_path / "snap.json"
    record.write_text(json.dumps({"workspace": name, "resolved": {pri: 2}}))
    snap_id = pvc.ok("snapshot", "create", str(record)).strip()
    assert pvc.ok("snapshot", "create", str(record)).strip() == snap_id
    assert json.loads(pvc.ok("snapshot", "show", snap_id, "--json"))["record"]["resolved"] == {pri: 2}
    record.write_text("{not json")
    pvc.fails(2, "snapshot", "create", str(record))


def test_workspace_outputs(pvc: Pvc, pri: str, tree: Path) -> None:
    name = pri.replace(":", "_")
    comp, fx = pri.replace("lgt", "comp"), pri.replace("lgt", "fx")
    created = json.loads(pvc.ok("workspace", "create", name, "--output", pri, "--output", comp, "--output", pri,
                                "--json"))
    assert created["outputs"] == [pri, comp]
    shown = [line.split() for line in pvc.ok("workspace", "show", name).splitlines()]
    assert ["outputs", pri] in shown and [comp] in shown
    ws = json.loads(pvc.ok("workspace", "set", name, "--output", fx, "--remove-output", comp, "--json"))
    assert ws["outputs"] == [pri, fx] and ws["revision"] == 2
    # dropping what is not an output is an error, and changes nothing
    error = pvc.fails(2, "workspace", "set", name, "--remove-output", comp)
    assert f"{comp!r} is not an output of workspace {name!r} (outputs: {pri}, {fx})" in error
    assert "not a version" in pvc.fails(2, "workspace", "set", name, "--output", f"{pri}@1")
    # refused before any request: the same answer with no service there
    offline = Pvc(closed_port_url(), pvc.capsys)
    assert "not a version" in offline.fails(2, "workspace", "create", name + "_v", "--output", f"{pri}@approved")
    assert "not a version" in offline.fails(2, "workspace", "set", name, "--remove-output", f"{pri}@2")
    assert json.loads(pvc.ok("workspace", "show", name, "--json"))["revision"] == 2
    history = pvc.ok("workspace", "history", name).splitlines()
    assert f"outputs={pri},{comp}" in history[1] and f"outputs={pri},{fx}" in history[2]

    # who makes what
    other = name + "_other"
    pvc.ok("workspace", "create", other, "--output", pri, "--root", comp)
    rows = [line.split() for line in pvc.ok("outputs", pri).splitlines()]
    assert rows[0] == ["WORKSPACE", "REV", "CHANGED", "AUTHOR"] and [r[:2] for r in rows[1:]] == [[name, "2"], [other, "1"]]
    found = json.loads(pvc.ok("outputs", comp, "--json"))
    assert found == {"pri": comp, "workspaces": []}
    assert pvc.ok("outputs", comp) == "" and "no workspace declares" in pvc.err
    assert [w["name"] for w in json.loads(pvc.ok("outputs", comp, "--as-of", created["changed_at"], "--json"))
            ["workspaces"]] == [name]
    pvc.fails(2, "outputs", f"{pri}@1")

    # a publish says which workspace it came from: its current revision
    version = json.loads(pvc.ok("publish", pri, str(tree), "--workspace", name, "--json"))
    assert version["workspace"] == {"name": name, "revision": 2}
    assert ["workspace", name, "(revision", "2)"] in [line.split() for line in pvc.ok("show", pri).splitlines()]
    plain = json.loads(pvc.ok("publish", pri, str(tree), "--json"))
    assert plain["workspace"] is None
    assert ["workspace", "-"] in [line.split() for line in pvc.ok("show", pri).splitlines()]
    assert "no workspace" in pvc.fails(3, "publish", pri, str(tree), "--workspace", name + "_nobody")
    assert [v["number"] for v in json.loads(pvc.ok("versions", pri, "--json"))] == [1, 2]


def _script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"the {name} console script is not installed next to {sys.executable}"
    return found


def test_installed_console_script(url: str, pri: str, tree: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PVC_URL": url}
    env.pop("PVC_TOKEN", None)

    def pvc(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_script("pvc"), *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=60)

    done = pvc("publish", pri, str(tree), "--label", "published")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"{pri}@1"
    assert "\x1b" not in done.stderr and "uploading" not in done.stderr  # no progress bar in a pipe
    done = pvc("get", f"{pri}@published", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert describe(tmp_path / "out") == describe(tree)
    assert "\x1b" not in done.stderr and "downloading" not in done.stderr
    bad = pvc("show", "not a pri")
    assert bad.returncode == 2 and bad.stderr.startswith("pvc: error: ") and "Traceback" not in bad.stderr
    down = pvc("versions", pri, PVC_URL=closed_port_url())
    assert down.returncode == 6 and len(down.stderr.strip().splitlines()) == 1


def test_progress_baron_a_terminal(url: str, pri: str, tree: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PVC_URL": url, "COLUMNS": "160"}
    env.pop("PVC_TOKEN", None)
    tree = tmp_path / "shot"
    tree.mkdir()
    files = 30
    for i in range(files):  # content no other test published: every file is uploaded
        (tree / f"f{i}.usda").write_bytes(os.urandom(5000))
    code, shown = on_a_terminal([_script("pvc"), "publish", pri, str(tree)], env)
    assert code == 0, shown
    assert "uploading" in shown and f"{files}/{files} files" in shown, shown
    code, shown = on_a_terminal([_script("pvc"), "get", pri, str(tmp_path / "out")], env)
    assert code == 0 and "downloading" in shown and f"{files}/{files} files" in shown, shown


def test_serve_delegates_to_the_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--data", str(tmp_path / "d"), "--port", "70000"]) == 2
    ready = tmp_path / "ready"
    proc = subprocess.Popen([_script("pvc"), "serve", "--data", str(tmp_path / "data"), "--port", "0",
                             "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no ready file"
        pvc = Pvc(ready.read_text().strip(), capsys)
        assert pvc.ok("products") == ""
    finally:
        proc.terminate()
        proc.wait(15)
    assert (tmp_path / "data").is_dir()
