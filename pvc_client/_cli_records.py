"""``pvc workspace ...``, ``pvc outputs`` and ``pvc snapshot ...``: thin wrappers over the record endpoints."""

from __future__ import annotations

import json as _json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._args import output_pri
from ._cli_common import (
    AsOfOption, AuthorOption, JsonOption, UrlOption, answer, call, default_author, dump, help_when_bare, note, out,
    table,
)
from ._client import DEFAULT_URL, PVCClient
from ._errors import Conflict, InvalidInput, NotFound
from ._plugins import plugin
from ._pri import parse_pri, parse_ref

__all__ = ["workspace_app", "snapshot_app", "outputs_command"]

_COMMON = {"add_completion": False, "rich_markup_mode": None,
           "pretty_exceptions_enable": False}
workspace_app = typer.Typer(help="Workspaces: named, versioned resolution settings.", **_COMMON)
snapshot_app = typer.Typer(help="Snapshots: immutable records of a resolved state.", **_COMMON)
help_when_bare(workspace_app)
help_when_bare(snapshot_app)

Name = Annotated[str, typer.Argument(metavar="NAME", show_default=False)]
Roots = Annotated[list[str] | None, typer.Option("--root", metavar="R", help="A root PRI[@VERSION] (repeatable).")]
Strategy = Annotated[str | None, typer.Option("--strategy", metavar="S", help="Resolution strategy (default: latest).")]
Pin = Annotated[str | None, typer.Option("--pin", metavar="TIME", help="See the store as of TIME ('none': unpinned).")]
Prefer = Annotated[list[str] | None, typer.Option("--prefer", metavar="LABEL", help="Preferred label, in order (repeatable).")]
Overrides = Annotated[list[str] | None, typer.Option("--override", metavar="PRI@N", help="Force this version (repeatable).")]
Outputs = Annotated[list[str] | None, typer.Option("--output", metavar="PRI",
                                                   help="A product this workspace makes (repeatable).")]


def _pin(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() == "none" else value


def _show(workspace: dict[str, Any], as_json: bool) -> int:
    return answer(workspace, as_json, _show_workspace)


def _show_workspace(workspace: dict[str, Any]) -> None:
    state = " (deleted)" if workspace.get("deleted") else ""
    out(f"{workspace.get('name')}{state}: revision {workspace.get('revision')}, "
        f"changed {workspace.get('changed_at')} by {workspace.get('author') or '-'}")
    rows: list[tuple[str, str]] = [
        ("  strategy", workspace.get("strategy") or "latest"),
        ("  pin", workspace.get("pin") or "-"),
        ("  prefer", ", ".join(workspace.get("prefer") or []) or "-"),
    ]
    for key in ("roots", "overrides", "outputs"):
        items = workspace.get(key) or ["-"]
        rows += [(f"  {key}" if i == 0 else "", item) for i, item in enumerate(items)]
    table(rows)


def _with_override(overrides: list[str], ref: str) -> list[str]:
    """Add ``PRI@N``, replacing any override of the same product."""
    parsed = parse_ref(ref)
    return [o for o in overrides if parse_ref(o).pri != parsed.pri] + [str(parsed)]


def _outputs(texts: list[str] | None) -> list[str]:
    """Outputs as given, checked before any request: a typo (a PRI@N) is a usage error even offline.

    Repeats are left to the service, which keeps each output once."""
    return [output_pri(t) for t in texts or []]


@workspace_app.command("create")
def create(
    name: Name, root: Roots = None, strategy: Strategy = None, pin: Pin = None, prefer: Prefer = None,
    override: Overrides = None, output: Outputs = None, author: AuthorOption = None,
    url: UrlOption = DEFAULT_URL, json: JsonOption = False,
) -> int:
    """Create a workspace (refused if NAME exists)."""
    overrides: list[str] = []
    for ref in override or []:
        overrides = _with_override(overrides, ref)
    spec = {"roots": list(root or []), "strategy": strategy or "latest", "pin": _pin(pin),
            "prefer": list(prefer or []), "overrides": overrides, "author": default_author(author)}
    if output:  # only when given, as the client sends it: a service that predates outputs refuses the key
        spec["outputs"] = _outputs(output)

    async def run(client: PVCClient) -> dict[str, Any]:
        try:
            current = await client.get_workspace(name)
        except NotFound:
            current = None
        if current is not None and not current.get("deleted"):
            raise Conflict(f"workspace {name!r} exists; change it with: pvc workspace set {name}")
        return await client.put_workspace(name, spec)

    return _show(call(url, run), json)


@workspace_app.command("set")
def set_(
    name: Name, root: Roots = None, strategy: Strategy = None, pin: Pin = None, prefer: Prefer = None,
    override: Overrides = None, output: Outputs = None,
    remove_root: Annotated[list[str] | None, typer.Option("--remove-root", metavar="R", help="Drop this root.")] = None,
    remove_override: Annotated[list[str] | None, typer.Option("--remove-override", metavar="PRI", help="Drop the override of PRI.")] = None,
    remove_output: Annotated[list[str] | None, typer.Option("--remove-output", metavar="PRI", help="Drop this output.")] = None,
    author: AuthorOption = None, url: UrlOption = DEFAULT_URL, json: JsonOption = False,
) -> int:
    """Change a workspace: add or drop roots, overrides and outputs, set strategy, pin or preferences."""
    dropped_pris = {parse_pri(p) for p in remove_override or []}
    added_outputs, dropped_outputs = _outputs(output), _outputs(remove_output)

    async def run(client: PVCClient) -> dict[str, Any]:
        spec = await client.get_workspace(name)
        if spec.get("deleted"):
            raise NotFound(f"workspace {name!r} was deleted")
        roots = list(spec.get("roots") or [])
        for r in remove_root or []:
            if r not in roots:
                raise InvalidInput(f"{r!r} is not a root of workspace {name!r} (roots: {', '.join(roots) or 'none'})")
            roots.remove(r)
        roots += [r for r in root or [] if r not in roots]
        overrides = [o for o in spec.get("overrides") or [] if parse_ref(o).pri not in dropped_pris]
        for ref in override or []:
            overrides = _with_override(overrides, ref)
        outputs = list(spec.get("outputs") or [])
        for pri in dropped_outputs:
            if pri not in outputs:
                raise InvalidInput(f"{pri!r} is not an output of workspace {name!r} "
                                   f"(outputs: {', '.join(outputs) or 'none'})")
            outputs.remove(pri)
        outputs += added_outputs
        spec.update(roots=roots, overrides=overrides, author=default_author(author))
        if "outputs" in spec or outputs:  # a service that predates outputs neither sends nor takes the key
            spec["outputs"] = outputs
        if strategy is not None:
            spec["strategy"] = strategy
        if pin is not None:
            spec["pin"] = _pin(pin)
        if prefer:
            spec["prefer"] = list(prefer)
        return await client.put_workspace(name, spec)

    return _show(call(url, run), json)


@workspace_app.command("pin")
def pin_(
    name: Name,
    time: Annotated[str, typer.Argument(metavar="TIME|none", show_default=False)],
    author: AuthorOption = None, url: UrlOption = DEFAULT_URL, json: JsonOption = False,
) -> int:
    """Pin a workspace to a time (relative times are fixed now), or unpin it with 'none'."""
    async def run(client: PVCClient) -> dict[str, Any]:
        spec = await client.get_workspace(name)
        if spec.get("deleted"):
            raise NotFound(f"workspace {name!r} was deleted")
        spec.update(pin=_pin(time), author=default_author(author))
        return await client.put_workspace(name, spec)

    return _show(call(url, run), json)


@workspace_app.command("show")
def show(name: Name, as_of: AsOfOption = None, url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> int:
    """Show a workspace (as it was at --as-of)."""
    return _show(call(url, lambda c: c.get_workspace(name, as_of)), json)


@workspace_app.command("history")
def history(name: Name, url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> int:
    """Every revision of a workspace, oldest first."""
    return answer(call(url, lambda c: c.workspace_history(name)), json, lambda revisions: table(
        [(w.get("revision"), w.get("changed_at"), w.get("author") or "-",
          "deleted" if w.get("deleted") else
          f"roots={','.join(w.get('roots') or [])} pin={w.get('pin') or '-'} strategy={w.get('strategy')}"
          f" outputs={','.join(w.get('outputs') or []) or '-'}")
         for w in revisions], ("REV", "CHANGED", "AUTHOR", "STATE")))


@workspace_app.command("list")
def list_(url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> int:
    """List workspaces."""
    return answer(call(url, lambda c: c.list_workspaces()), json, lambda found: table(
        [(w.get("name"), w.get("revision"), w.get("changed_at"), ", ".join(w.get("roots") or [])) for w in found],
        ("NAME", "REV", "CHANGED", "ROOTS") if found else None))


@workspace_app.command("delete")
def delete(name: Name, url: UrlOption = DEFAULT_URL) -> int:
    """Delete a workspace (its history is kept)."""
    call(url, lambda c: c.delete_workspace(name))
    return 0


def outputs_command(
    pri: Annotated[str, typer.Argument(metavar="PRI", show_default=False)],
    as_of: AsOfOption = None, url: UrlOption = DEFAULT_URL, json: JsonOption = False,
) -> int:
    """List the workspaces that declare PRI as an output.

    A workspace counts by its current revision (at --as-of: its revision then).
    Declaring an output locks nothing: this is how others see who makes a product."""
    def human(found: dict[str, Any]) -> None:
        declared = found.get("workspaces") or []
        if not declared:
            note(f"no workspace declares {found.get('pri')} as an output")
            return
        table([(w.get("name"), w.get("revision"), w.get("changed_at"), w.get("author") or "-") for w in declared],
              ("WORKSPACE", "REV", "CHANGED", "AUTHOR"))

    return answer(call(url, lambda c: c.declared_outputs(pri, as_of)), json, human)


@snapshot_app.command("create")
def snapshot_create(
    record: Annotated[str | None, typer.Argument(metavar="[FILE|-]", help="A JSON record to store as is ('-': standard input).",
                                                 show_default=False)] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", metavar="NAME",
                                                  help="Freeze this workspace's current resolution.")] = None,
    url: UrlOption = DEFAULT_URL, json: JsonOption = False,
) -> int:
    """Freeze a workspace's resolution (or store a given record); prints the snapshot id.

    The id is derived from the content: the same resolution always gets the same id.
    A live workspace is pinned to the time of creation."""
    if (record is None) == (workspace is None):
        raise InvalidInput("give either --workspace NAME or a record FILE")
    if workspace is not None:
        # resolving is the resolver's job (prodfs.resolution): one implementation
        snapshot_of = plugin("snapshot-of-workspace", needs="the ProdFS resolver")
        snapshot = call(url, lambda c: snapshot_of(c, workspace))
    else:
        text = sys.stdin.read() if record == "-" else Path(record).read_text(encoding="utf-8")
        try:
            value = _json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"{record}: not JSON ({exc})") from None
        snapshot = call(url, lambda c: c.create_snapshot(value))
    return answer(snapshot, json, lambda snapshot: out(snapshot["id"]))


@snapshot_app.command("show")
def snapshot_show(
    id: Annotated[str, typer.Argument(metavar="ID", show_default=False)],
    url: UrlOption = DEFAULT_URL, json: JsonOption = False,
) -> int:
    """Print a snapshot (its record as JSON)."""
    def human(snapshot: dict[str, Any]) -> None:
        out(f"{snapshot['id']}  created {snapshot.get('created_at')}")
        dump(snapshot.get("record"))

    return answer(call(url, lambda c: c.get_snapshot(id)), json, human)
