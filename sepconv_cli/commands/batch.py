"""Progress of ``interpolate`` over several files: a line per file and one total with its ETA."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sepconv_cli.commands.progress import FrameLines


class BatchProgress:
    """What the batch loop reports; this one shows nothing but the messages it is given.

    ``start(i)`` before file ``i`` (0-based), ``frames(done, total)`` while it runs (the
    pipeline's progress callback), ``finish(i, ok, line)`` after it, with its summary or
    error ``line``; ``note(line)`` for anything else.
    """

    def __init__(self, names: list[str], estimates: list[int | None], write: Callable[[str], None]) -> None:
        self.names, self.estimates, self.write = names, estimates, write

    def start(self, index: int) -> None:
        pass

    def frames(self, done: int, total: int | None) -> None:
        pass

    def finish(self, index: int, ok: bool, line: str) -> None:
        self.write(f"[{index + 1}/{len(self.names)}] {line}")

    def note(self, line: str) -> None:
        self.write(line)


class BatchLines(BatchProgress):
    """For a log: besides the line per finished file, the running file's progress every
    10 s (``progress.FrameLines``), so a long file is not silent until it ends."""

    def __init__(self, names: list[str], estimates: list[int | None], write: Callable[[str], None]) -> None:
        super().__init__(names, estimates, write)
        self.lines: FrameLines | None = None

    def start(self, index: int) -> None:
        self.lines = FrameLines(f"[{index + 1}/{len(self.names)}] {self.names[index]}", self.write)

    def frames(self, done: int, total: int | None) -> None:
        if self.lines is not None:
            self.lines(done, total)


class BatchBars(BatchProgress):
    """Rich bars: "all files" on top (frames over every file: its ETA is the batch's),
    then one line per file: waiting, running with its own bar, done or failed."""

    def __init__(self, bar: Progress, names: list[str], estimates: list[int | None], write: Callable[[str], None]) -> None:
        super().__init__(names, estimates, write)
        self.bar = bar
        known = [e for e in estimates if e]
        # Files whose length is unknown count as the average of the others.
        average = sum(known) // len(known) if known else 100
        self.sizes = [e or average for e in estimates]
        self.total = bar.add_task(f"all {len(names)} files", total=sum(self.sizes), rate=0.0)
        self.tasks: list[TaskID] = [
            bar.add_task(f"  {name}: waiting", total=size, rate=0.0, start=False) for name, size in zip(names, self.sizes)
        ]
        self.before = 0  # frames of the files already finished (or failed: counted as done)
        self.current = 0
        self.started = time.monotonic()

    def _rate(self, done: float) -> float:
        elapsed = time.monotonic() - self.started
        return done / elapsed if elapsed > 0 else 0.0

    def start(self, index: int) -> None:
        self.current = index
        self.bar.start_task(self.tasks[index])
        self.bar.update(self.tasks[index], description=f"  {self.names[index]}")

    def frames(self, done: int, total: int | None) -> None:
        task = self.tasks[self.current]
        size = total or self.sizes[self.current]
        elapsed = self.bar.tasks[task].elapsed or 0.0
        self.bar.update(task, completed=done, total=size, rate=done / elapsed if elapsed > 0 else 0.0)
        overall = self.before + min(done, size)
        self.bar.update(self.total, completed=overall, rate=self._rate(overall))

    def finish(self, index: int, ok: bool, line: str) -> None:
        task = self.tasks[index]
        size = self.bar.tasks[task].total or self.sizes[index]
        self.bar.update(task, completed=size, description=f"  {self.names[index]}: {'done' if ok else 'failed'}")
        self.bar.stop_task(task)
        self.before += self.sizes[index]
        self.bar.update(self.total, completed=self.before, rate=self._rate(self.before))
        super().finish(index, ok, line)


@contextmanager
def batch_progress(*, bars: bool, names: list[str], estimates: list[int | None], quiet: bool) -> Iterator[BatchProgress]:
    """``bars`` on a terminal; otherwise (a log, a pipe) one line per file as it ends and
    the running file's progress every 10 s. With ``quiet`` only failures are written."""

    def write(line: str) -> None:
        if not quiet or line.startswith("[") and ": error: " in line:
            click.echo(line, err=True)

    if quiet:
        yield BatchProgress(names, estimates, write)
        return
    if not bars:
        yield BatchLines(names, estimates, write)
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} frames/s"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield BatchBars(bar, names, estimates, write)
