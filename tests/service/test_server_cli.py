"""The service command line refuses bad set-ups with one clear line (in-process ``main``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc_service.server import main


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("pvc: ")
    return err[0]


def test_non_loopback_needs_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "d"), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "refusing to listen on 0.0.0.0 without --tokens" in _one_line(capsys)
    assert not (tmp_path / "d").exists()  # refused before touching anything
    # --insecure-bind passes that check (and this run then stops at the database)
    assert main(["--data", str(tmp_path / "d"), "--host", "0.0.0.0", "--insecure-bind",
                 "--db", "mysql://x@y/z"]) == 2
    assert "unsupported database" in _one_line(capsys)


def test_bad_tokens_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\nread viewer abcdefgh123\nsuperuser root abcdefgh456\n")
    assert main(["--data", str(tmp_path / "d"), "--tokens", str(tokens)]) == 2
    assert f"{tokens}:3: unknown role 'superuser'" in _one_line(capsys)
    tokens.write_text("read viewer same-token-1\npublish lighter same-token-1\n")
    assert main(["--data", str(tmp_path / "d"), "--tokens", str(tokens)]) == 2
    assert "already given to 'viewer'" in _one_line(capsys)
    assert main(["--data", str(tmp_path / "d"), "--tokens", str(tmp_path / "absent")]) == 2
    assert "cannot read" in _one_line(capsys)
    tokens.write_text("# nobody yet\n")
    assert main(["--data", str(tmp_path / "d"), "--tokens", str(tokens)]) == 2
    assert "no tokens" in _one_line(capsys)


def test_bad_database_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "d"), "--db", "mysql://x@y/z"]) == 2
    assert "unsupported database 'mysql'" in _one_line(capsys)
    assert main(["--data", str(tmp_path / "d"), "--db", "postgresql://nobody@127.0.0.1:1/none"]) == 1
    assert "cannot open the database" in _one_line(capsys)


def test_usage_errors_return_instead_of_exiting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--port", "70000"]) == 2
    assert "not a port number" in _one_line(capsys)
    assert main(["--help"]) == 0
    assert "--ready-file" in capsys.readouterr().out


def test_workers_must_be_a_sensible_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "d"), "--workers", "0"]) == 2
    assert "--workers 0" in _one_line(capsys)
