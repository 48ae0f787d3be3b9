"""What every `pvc` command shares: options, running a client under trio, output, progress."""

from __future__ import annotations

import getpass
import json
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import trio
import typer

from ._client import DEFAULT_URL, PVCClient
from .progress import transfer_progress as progress_bar

__all__ = [
    "UrlOption", "JsonOption", "AsOfOption", "AuthorOption", "call", "out", "note", "dump",
    "table", "mode_string", "human_size", "progress_bar", "default_author", "help_when_bare", "answer",
]

T = TypeVar("T")

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="PVC_URL", show_envvar=True, metavar="URL",
                 help="The PVC service (the token, if any, is read from PVC_TOKEN)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", metavar="TIME",
                 help="Answer as the store stood then: ISO time with zone, YYYY-MM-DD, now, -3d/-12h/-30m."),
]
AuthorOption = Annotated[
    str | None, typer.Option("--author", help="Recorded author (default: your login; a token's name wins).")
]


def help_when_bare(group: typer.Typer) -> None:
    """A group given no command prints its help and exits with the usage code (2)."""

    @group.callback(invoke_without_command=True)
    def _bare(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
            typer.echo(ctx.get_help(), err=True)
            raise typer.Exit(2)


def default_author(author: str | None) -> str | None:
    if author is not None:
        return author
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers): let the service decide
        return None


def call(url: str, fn: Callable[[PVCClient], Awaitable[T]]) -> T:
    """Run ``fn(client)`` under trio with a client for ``url`` (token from PVC_TOKEN)."""
    token = os.environ.get("PVC_TOKEN") or None

    async def main() -> T:
        async with PVCClient(url or DEFAULT_URL, token=token) as client:
            return await fn(client)

    return trio.run(main)


def answer(value: T, as_json: bool, human: Callable[[T], object]) -> int:
    """Print a command's result: as JSON with ``--json``, else as ``human`` shows it to a person.

    Returns the exit code of a command that succeeded (0), for ``return answer(...)``."""
    if as_json:
        dump(value)
    else:
        human(value)
    return 0


def out(text: str = "") -> None:
    typer.echo(text)


def note(text: str) -> None:
    """Commentary for a person: stderr, so stdout stays parseable."""
    typer.echo(text, err=True)


def dump(value: Any) -> None:
    out(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


def table(rows: Sequence[Sequence[object]], headers: Sequence[str] | None = None) -> None:
    """Left-aligned columns; the last column is not padded (it may hold free text)."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    if headers is not None:
        cells.insert(0, list(headers))
    if not cells:
        return
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(cells[0]))]
    for row in cells:
        padded = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + row[-1:]
        out("  ".join(padded).rstrip())


_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def mode_string(entry: dict[str, Any]) -> str:
    return stat.filemode(_TYPE_BITS.get(entry.get("type", ""), 0) | int(entry.get("mode", 0)))


def human_size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


