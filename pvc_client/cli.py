"""The ``pvc`` command line: publish, inspect, label, rename and fetch products; run the service.

``main(args)`` is callable from tests and returns the exit code; ``main()`` is
the console script. User errors print one line (``pvc: error: ...``) to
stderr and never a traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_common import (
    AsOfOption,
    AuthorOption,
    JsonOption,
    UrlOption,
    answer,
    call,
    default_author,
    help_when_bare,
    human_size,
    mode_string,
    note,
    out,
    progress_bar,
    table,
)
from ._cli_records import outputs_command, snapshot_app, workspace_app
from ._client import DEFAULT_URL, PVCClient
from ._errors import Conflict, InvalidInput, InvalidPRI, InvalidTime, NotFound, PVCError, Unauthorized, Unavailable
from ._plugins import plugin
from ._publish import Publication
from ._pri import parse_pri, parse_ref

__all__ = ["app", "main", "EXIT_CODES"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 0, 1, 2, 3, 4
EXIT_UNAUTHORIZED, EXIT_UNAVAILABLE, EXIT_REFUSED = 5, 6, 7
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_INTERNAL: "unexpected internal error",
    EXIT_USAGE: "usage error (bad option, malformed PRI or time)",
    EXIT_NOT_FOUND: "not found",
    EXIT_CONFLICT: "conflict",
    EXIT_UNAUTHORIZED: "unauthorized or forbidden",
    EXIT_UNAVAILABLE: "service unavailable",
    EXIT_REFUSED: "invalid input refused by the service",
}
EPILOG = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()) + "."

app = typer.Typer(
    name="pvc",
    help="PVC, the product version store: publish, inspect, label and fetch product versions.",
    epilog=EPILOG,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
help_when_bare(app)
app.add_typer(workspace_app, name="workspace")
app.add_typer(snapshot_app, name="snapshot")

Ref = Annotated[str, typer.Argument(metavar="PRI[@VERSION]", show_default=False)]
Pri = Annotated[str, typer.Argument(metavar="PRI", show_default=False)]


# -- the service ---------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def serve(
    data: Annotated[Path, typer.Option("--data", metavar="DIR", help="Data directory (blobs, SQLite).")],
    db: Annotated[str | None, typer.Option("--db", metavar="URL", help="Database URL (default: SQLite in DIR).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to bind (0: any free port).")] = None,
    tokens: Annotated[Path | None, typer.Option("--tokens", metavar="FILE", help="Tokens file (ROLE NAME TOKEN).")] = None,
    insecure_bind: Annotated[bool, typer.Option("--insecure-bind", help="Allow a non-loopback address without tokens.")] = False,
    ready_file: Annotated[Path | None, typer.Option("--ready-file", metavar="F", help="Written once serving.")] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error.")] = None,
) -> int:
    """Run the PVC service."""
    serve_main = plugin("serve", needs="the PVC service")
    argv = ["--data", str(data)]
    for flag, value in (("--db", db), ("--host", host), ("--port", port), ("--tokens", tokens),
                        ("--ready-file", ready_file), ("--log-level", log_level)):
        if value is not None:
            argv += [flag, str(value)]
    if insecure_bind:
        argv.append("--insecure-bind")
    return int(serve_main(argv) or 0)


@app.command("import", epilog=EPILOG)
def import_history(
    file: Annotated[str, typer.Argument(metavar="FILE.jsonl", help="One publish a line; - reads stdin.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", metavar="DIR", help="Data directory (blobs, SQLite).")],
    db: Annotated[str | None, typer.Option("--db", metavar="URL", help="Database URL (default: SQLite in DIR).")] = None,
    allow_missing_blobs: Annotated[bool, typer.Option("--allow-missing-blobs", help="Accept manifests naming blobs the store lacks (benchmarks).")] = False,
) -> int:
    """Import a JSON-lines history straight into a store's database, in one transaction."""
    import_main = plugin("import", needs="the PVC service")
    argv = [file, "--data", str(data)]
    if db is not None:
        argv += ["--db", db]
    if allow_missing_blobs:
        argv.append("--allow-missing-blobs")
    return int(import_main(argv) or 0)


# -- publishing ----------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def publish(
    pairs: Annotated[list[str], typer.Argument(metavar="PRI DIR", show_default=False,
                                         help="The product and the directory to publish as its next version (repeatable pairs).")],
    dep: Annotated[list[str] | None, typer.Option("--dep", metavar="PRI@N", help="A dependency (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", metavar="NAME", help="Label the new version (repeatable).")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="What changed.")] = "",
    at: Annotated[str | None, typer.Option("--at", metavar="TIME", help="Backdate the version (not before the newest).")] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", metavar="NAME",
                                                  help="Made in this workspace: record its current revision.")] = None,
    author: AuthorOption = None,
    url: UrlOption = DEFAULT_URL,
    json: JsonOption = False,
) -> int:
    """Publish DIR as the next version of PRI (the first publish creates the product).

    Several PRI DIR pairs publish together in one transfer and one transaction;
    the options apply to every version, and none is published unless every tree
    is stored and every version accepted. Prints each new PRI@N on a line of its
    own, in the order given.
    """
    if len(pairs) % 2:
        raise typer.BadParameter(f"PRI DIR pairs expected, got {len(pairs)} arguments", param_hint="PRI DIR")
    items = [(pairs[i], Path(pairs[i + 1])) for i in range(0, len(pairs), 2)]

    async def run(client: PVCClient) -> list[dict[str, Any]]:
        origin = None
        if workspace is not None:
            # read before anything is uploaded: an unknown workspace costs no transfer
            current = await client.get_workspace(workspace)
            origin = {"name": current["name"], "revision": current["revision"]}
        shared = dict(dependencies=dep or (), labels=label or (), message=message,
                      author=default_author(author), at=at, workspace=origin)
        with progress_bar("uploading") as progress:
            return await client.publish_directories(
                [Publication(pri, directory, **shared) for pri, directory in items], progress=progress)

    def human(versions: list[dict[str, Any]]) -> None:
        files = [e for v in versions for e in v.get("manifest", []) if e.get("type") == "file"]
        what = "" if len(versions) == 1 else f"{len(versions)} versions, "
        note(f"published {what}{len(files)} files ({human_size(sum(e.get('size', 0) for e in files))})")
        for version in versions:
            out(version["ref"])

    versions = call(url, run)
    # one pair answers one Version, as it always has; several answer a list
    return answer(versions[0] if len(items) == 1 else versions, json, lambda _: human(versions))


# -- reading -------------------------------------------------------------------------------


def _origin_text(origin: dict[str, Any] | None) -> str:
    return "-" if not origin else f"{origin.get('name')} (revision {origin.get('revision')})"


@app.command(epilog=EPILOG)
def products(
    prefix: Annotated[str | None, typer.Argument(metavar="[PREFIX]", show_default=False)] = None,
    as_of: AsOfOption = None,
    url: UrlOption = DEFAULT_URL,
    json: JsonOption = False,
) -> int:
    """List products (optionally those whose PRI starts with PREFIX)."""
    return answer(call(url, lambda c: c.list_products(prefix, as_of)), json, lambda found: table(
        [(p["pri"], p.get("latest"), p.get("created_at"), ", ".join(p.get("aliases") or [])) for p in found],
        ("PRI", "LATEST", "CREATED", "ALIASES") if found else None))


@app.command(epilog=EPILOG)
def versions(pri: Pri, as_of: AsOfOption = None, url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> int:
    """List the versions of PRI, with the labels on each."""
    async def run(client: PVCClient) -> tuple[list[dict[str, Any]], dict[str, int]]:
        found = await client.list_versions(pri, as_of)
        return found, await client.labels(pri, as_of)

    found, labels = call(url, run)

    def human(found: list[dict[str, Any]]) -> None:
        on: dict[int, list[str]] = {}
        for name, number in sorted(labels.items()):
            on.setdefault(number, []).append(name)
        table([(v["number"], v.get("created_at"), v.get("author"), ",".join(on.get(v["number"], [])),
                v.get("message", "")) for v in found], ("N", "CREATED", "AUTHOR", "LABELS", "MESSAGE"))

    return answer(found, json, human)


@app.command(epilog=EPILOG)
def show(ref: Ref, as_of: AsOfOption = None, url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> int:
    """Show one version: summary, dependencies, labels and its files (PRI alone: the newest)."""
    def human(version: dict[str, Any]) -> None:
        manifest = version.get("manifest", [])
        files = [e for e in manifest if e.get("type") == "file"]
        out(version["ref"])
        table([
            ("  created", version.get("created_at")),
            ("  author", version.get("author")),
            ("  message", version.get("message")),
            ("  labels", ", ".join(version.get("labels", [])) or "-"),
            ("  depends", ", ".join(version.get("dependencies", [])) or "-"),
            ("  workspace", _origin_text(version.get("workspace"))),
            ("  contents", f"{len(manifest)} entries, {len(files)} files, "
                           f"{human_size(sum(e.get('size', 0) for e in files))}"),
        ])
        out()
        table([(mode_string(e), e.get("size", "") if e.get("type") == "file" else "-",
                f"{e['path']} -> {e.get('target')}" if e.get("type") == "symlink"
                else e["path"] + ("/" if e.get("type") == "dir" else ""))
               for e in manifest])

    return answer(call(url, lambda c: c.resolve(ref, as_of)), json, human)


@app.command(epilog=EPILOG)
def labels(
    pri: Pri,
    history: Annotated[str | None, typer.Option("--history", metavar="NAME", help="Every move of this label.")] = None,
    as_of: AsOfOption = None,
    url: UrlOption = DEFAULT_URL,
    json: JsonOption = False,
) -> int:
    """List the labels of PRI, or the history of one."""
    if history is not None:
        return answer(call(url, lambda c: c.label_history(pri, history)), json, lambda moves: table(
            [(m.get("moved_at"), "deleted" if m.get("version") is None else m["version"], m.get("author", ""))
             for m in moves], ("MOVED", "VERSION", "AUTHOR")))
    return answer(call(url, lambda c: c.labels(pri, as_of)), json, lambda found: table(sorted(found.items())))


# -- changing names ------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def label(
    ref: Annotated[str, typer.Argument(metavar="PRI@VERSION", help="With --delete: the PRI.", show_default=False)],
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False)],
    delete: Annotated[bool, typer.Option("--delete", help="Remove the label NAME from PRI.")] = False,
    author: AuthorOption = None,
    url: UrlOption = DEFAULT_URL,
    json: JsonOption = False,
) -> int:
    """Point label NAME at a version (PRI@N, or PRI@label to copy another label)."""
    if delete:
        pri = parse_pri(ref).text
        call(url, lambda c: c.delete_label(pri, name))
        note(f"{pri}: label {name!r} removed")
        return EXIT_OK
    parsed = parse_ref(ref)
    if parsed.versionless:
        raise typer.BadParameter(f"say which version gets the label: {ref}@N", param_hint="PRI@VERSION")

    async def run(client: PVCClient) -> dict[str, Any]:
        number = parsed.number
        if number is None:
            number = (await client.get_version(parsed.pri.text, parsed.selector or ""))["number"]
        return await client.move_label(parsed.pri.text, name, number, author=default_author(author))

    return answer(call(url, run), json, lambda moved: out(f"{parsed.pri.text}@{moved['version']}  {moved['label']}"))


@app.command(epilog=EPILOG)
def rename(old: Pri, new: Pri, url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> int:
    """Rename a product; the old name keeps working as an alias."""
    return answer(call(url, lambda c: c.rename(old, new)), json, lambda product: out(f"{old} -> {product['pri']}"))


# -- fetching ------------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def get(
    ref: Ref,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Created, or an empty directory.", show_default=False)],
    as_of: AsOfOption = None,
    url: UrlOption = DEFAULT_URL,
    json: JsonOption = False,
) -> int:
    """Write a version's files into DIR, verifying every one."""
    async def run(client: PVCClient) -> dict[str, Any]:
        with progress_bar("downloading") as progress:
            return await client.materialize(ref, directory, as_of=as_of, progress=progress)

    version = call(url, run)
    return answer({k: v for k, v in version.items() if k != "manifest"}, json,
                  lambda version: out(f"{version['ref']} -> {directory}"))


@app.command(epilog=EPILOG)
def events(
    after: Annotated[int, typer.Option("--after", metavar="N", min=0, help="Start after this cursor.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for new events.")] = False,
    url: UrlOption = DEFAULT_URL,
    json: JsonOption = False,
) -> int:
    """Print the change feed (with --json: one JSON object per line)."""
    import json as _json

    def show_event(event: dict[str, Any]) -> None:
        if json:
            out(_json.dumps(event, ensure_ascii=False))
            return
        details = {k: v for k, v in event.items() if k not in ("id", "time", "kind", "pri")}
        out("  ".join([str(event.get("id")), str(event.get("time")), str(event.get("kind")),
                       str(event.get("pri", "")), " ".join(f"{k}={v}" for k, v in details.items())]).rstrip())

    async def run(client: PVCClient) -> None:
        cursor = after
        while True:
            page = await client.events(after=cursor, timeout=30.0 if follow else 0.0)
            for event in page.get("events", []):
                show_event(event)
            sys.stdout.flush()
            done = not page.get("events")
            cursor = max(cursor, int(page.get("cursor", cursor)))
            if done and not follow:
                return

    call(url, run)
    return EXIT_OK


# registered after the commands above so that --help lists it beside the workspace group
app.command("outputs", epilog=EPILOG)(outputs_command)


# -- entry point ---------------------------------------------------------------------------


def exit_code(error: PVCError) -> int:
    if isinstance(error, InvalidPRI | InvalidTime):
        return EXIT_USAGE
    if isinstance(error, InvalidInput):
        return EXIT_REFUSED if error.status is not None else EXIT_USAGE
    for cls, code in ((NotFound, EXIT_NOT_FOUND), (Conflict, EXIT_CONFLICT),
                      (Unauthorized, EXIT_UNAUTHORIZED), (Unavailable, EXIT_UNAVAILABLE)):
        if isinstance(error, cls):
            return code
    return EXIT_INTERNAL


def _leaf(error: BaseException) -> BaseException:
    """The error worth reporting from inside trio's exception groups."""
    while isinstance(error, BaseExceptionGroup):
        leaves = error.exceptions
        error = next((e for e in leaves if isinstance(e, PVCError | OSError | KeyboardInterrupt)), leaves[0])
    return error


def _is_usage_error(error: BaseException) -> bool:
    # Typer raises click's exceptions (vendored in recent releases, imported in older
    # ones): recognize them by their interface rather than by a private class.
    return hasattr(error, "exit_code") and callable(getattr(error, "format_message", None))


def _fail(message: str, code: int) -> int:
    typer.echo(f"pvc: error: {message}", err=True)
    return code


def main(args: list[str] | None = None) -> int:
    """Run ``pvc`` with ``args`` (default: the process arguments); return the exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="pvc", standalone_mode=False)
    except typer.Abort:
        return 130
    except BaseException as raised:  # noqa: BLE001 - the one place where every failure becomes a code
        error = _leaf(raised)
        if isinstance(error, KeyboardInterrupt):
            return 130
        if _is_usage_error(error):
            ctx = getattr(error, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if getattr(ctx, "command_path", None) else ""
            return _fail(error.format_message() + hint, int(error.exit_code))  # type: ignore[attr-defined]
        if isinstance(error, SystemExit):
            return error.code if isinstance(error.code, int) else EXIT_INTERNAL
        if isinstance(error, PVCError):
            return _fail(str(error), exit_code(error))
        if isinstance(error, OSError):
            where = f": {error.filename}" if error.filename else ""
            return _fail(f"{error.strerror or error}{where}", EXIT_INTERNAL)
        if os.environ.get("PVC_DEBUG"):
            traceback.print_exception(raised)
        return _fail(f"internal error: {type(error).__name__}: {error} (PVC_DEBUG=1 shows where)",
                     EXIT_INTERNAL)
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
