"""``python -m prodfs_demo``: build the demo show and publish it to a PVC service, once."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
import trio
import typer

from pvc_client import DEFAULT_URL, PVCClient, PVCError, parse_time

from ._build import build
from ._publish import DemoError, DemoShow, publish

__all__ = ["main"]

app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


def _fail(message: str) -> None:
    typer.echo(f"prodfs-demo: {message}", err=True)
    raise typer.Exit(1)


async def _publish(url: str, token: str | None, plan_dir: Path, scale: int, start: str | None) -> DemoShow:
    from . import default_start

    plan = build(plan_dir, start=parse_time(start) if start else default_start(), scale=scale)
    async with PVCClient(url, token=token, timeout=60.0) as client:
        return await publish(client, plan)


@app.command()
def run(
    url: str = typer.Option(os.environ.get("PVC_URL", DEFAULT_URL), "--url",
                            help="the PVC service (default: $PVC_URL)"),
    workdir: Path | None = typer.Option(None, "--workdir",
                                           help="where to build the versions (default: a temporary directory)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the show's description (JSON) here"),
    scale: int = typer.Option(1, "--scale", min=1, help="number of shots"),
    start: str | None = typer.Option(None, "--start",
                                        help="start of the history (default: midnight UTC ten days ago)"),
    token_file: Path | None = typer.Option(None, "--token-file",
                                              help="file holding the PVC token (default: $PVC_TOKEN)"),
) -> None:
    """Build the demo show and publish it; if the service has it already, say so and publish nothing."""
    try:
        token = token_file.read_text().strip() if token_file else os.environ.get("PVC_TOKEN") or None
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            show = trio.run(_publish, url, token, workdir, scale, start)
        else:
            with tempfile.TemporaryDirectory(prefix="prodfs-demo-") as tmp:
                show = trio.run(_publish, url, token, Path(tmp), scale, start)
        if json_out is not None:
            show.save(json_out)
    except (PVCError, DemoError, OSError, ValueError) as exc:
        _fail(str(exc))
        return
    versions = sum(len(p.versions) for p in show.products.values())
    if show.already_published:
        typer.echo(f"the demo show is already published on {url} ({len(show.products)} products, "
                   f"{versions} versions): nothing to do")
    else:
        typer.echo(f"published the demo show on {url}: {len(show.products)} products, {versions} versions")
    pins = show.pins()
    typer.echo(f"history: {min(pins.values()).date()} .. {max(pins.values()).date()} "
               f"(pin a day with --pin YYYY-MM-DD)")
    if json_out is not None:
        typer.echo(f"description: {json_out}")


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="python -m prodfs_demo", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
