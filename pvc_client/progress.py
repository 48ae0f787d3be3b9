"""Progress of a transfer on a terminal: the one bar `pvc publish`, `pvc get`, `pvc import` and `prodfs prefetch` show.

Files, bytes, rate and time left on stderr while it is a terminal; nothing at
all otherwise (scripts, CI, logs stay clean).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["transfer_progress"]


@contextmanager
def transfer_progress(description: str, *, enabled: bool | None = None, unit: str = "files"
                      ) -> Iterator[Callable[[int, int, int, int], None] | None]:
    """Yield ``update(bytes_done, bytes_total, items_done, items_total)``, or None when not shown.

    ``enabled`` None means: only when stderr is a terminal. Items are counted
    in ``unit``; an ``items_total`` of 0 means not known (only the count shows).
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = ("{task.description}", BarColumn(), TextColumn("{task.fields[files]}"), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None, files="")

        def update(done: int, total: int, files_done: int, files_total: int) -> None:
            count = f"{files_done:,}/{files_total:,}" if files_total else f"{files_done:,}"
            bar.update(task, completed=done, total=total, files=f"{count} {unit}")

        yield update
