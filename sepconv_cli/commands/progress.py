"""Rich progress bars for the commands (the library reports through callbacks)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def silence_info(quiet: bool) -> None:
    """With ``--quiet``, keep the library's INFO lines (the one-off kernel build) off stderr."""
    if quiet:
        logging.getLogger("sepconv_cli").setLevel(logging.WARNING)


@contextmanager
def frame_progress(*, enabled: bool, description: str, unit: str = "frames") -> Iterator[Callable[[int, int | None], None]]:
    """A ``progress(done, total)`` callback drawing a bar on the terminal, or doing nothing."""
    if not enabled:
        yield lambda done, total: None
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]:.1f}} {unit}/s"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None, rate=0.0)

        def update(done: int, total: int | None) -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            bar.update(task, completed=done, total=total, rate=done / elapsed if elapsed > 0 else 0.0)

        yield update
