"""How every ``prodfs`` command prints its result: JSON with ``--json``, else lines for a person."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["add_command", "answer", "print_json"]

T = TypeVar("T")


def print_json(doc: object) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def answer(opts: argparse.Namespace, doc: T, human: Callable[[T], object]) -> int:
    """Print ``doc`` as JSON when the command was given ``--json``, else as ``human`` shows it.

    Returns the exit code of a command that succeeded (0), for ``return answer(...)``."""
    if getattr(opts, "json", False):
        print_json(doc)
    else:
        human(doc)
    return 0


def add_command(sub: Any, name: str, help: str, run: Callable[[argparse.Namespace], int], *,
                json: bool = True) -> argparse.ArgumentParser:
    """A ``prodfs`` subcommand that runs ``run(opts)``; with ``json``, its ``--json`` option (see `answer`)."""
    parser = sub.add_parser(name, help=help)
    parser.set_defaults(run=run)
    if json:
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser
