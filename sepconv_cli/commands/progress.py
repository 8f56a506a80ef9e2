"""Rich progress bars for the commands (the library reports through callbacks)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import TaskID

if TYPE_CHECKING:  # the evaluation library is loaded by ``eval`` alone, not by every command
    from sepconv_cli.evaluation.runner import Step


def silence_info(quiet: bool) -> None:
    """With ``--quiet``, keep the library's INFO lines (the one-off kernel build) off stderr."""
    if quiet:
        logging.getLogger("sepconv_cli").setLevel(logging.WARNING)


def _clock() -> float:
    """The clock of the progress lines (a seam: tests replace it to skip the waiting)."""
    return time.monotonic()


def _duration(seconds: float) -> str:
    """``42 s``, ``3:05``, ``1:02:09``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class FrameLines:
    """``progress(done, total)`` for a log: a plain line every ``every_s`` seconds of the
    run (none before the first interval ends, so a short run prints only its summary),
    e.g. ``clip.mp4 → clip.2x.mp4: 120/480 frames (25%), 3.1 frames/s, ETA 1:56``.
    ``clock`` returns seconds (monotonic); it is read at each call."""

    def __init__(self, description: str, write: Callable[[str], None], *, unit: str = "frames",
                 every_s: float = 10.0, clock: Callable[[], float] | None = None) -> None:
        self.description, self.write, self.unit, self.every_s = description, write, unit, every_s
        self.clock = clock or _clock
        self.started = self.clock()
        self.last_line = self.started
        self.first: tuple[float, int] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
        if now - self.last_line < self.every_s:
            return
        self.last_line = now
        elapsed = now - self.started
        # The first frame carries the warm-up (a kernel build, the first network call):
        # the rate, and so the ETA, is measured after it once there is something to measure.
        since, before = self.first
        if done > before and now > since:
            rate = (done - before) / (now - since)
        else:
            rate = done / elapsed if elapsed > 0 else 0.0
        line = f"{self.description}: {_fraction(done, total)} {self.unit}, {rate:.1f} {self.unit}/s"
        if total and rate > 0 and done < total:
            line += f", ETA {_duration((total - done) / rate)}"
        self.write(f"{line} [{_duration(elapsed)}]")


@contextmanager
def frame_progress(*, enabled: bool, description: str, unit: str = "frames",
                   lines: bool = False) -> Iterator[Callable[[int, int | None], None]]:
    """A ``progress(done, total)`` callback drawing a bar on the terminal, writing a
    ``FrameLines`` line to stderr now and then with ``lines`` (stderr is a log or a pipe),
    or doing nothing (``enabled=False``, i.e. ``--quiet``)."""
    if not enabled:
        yield lambda done, total: None
        return
    if lines:
        yield FrameLines(description, lambda text: click.echo(text, err=True), unit=unit)
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


class ScoringProgress:
    """Progress of ``eval`` over clips and methods; this one shows nothing.

    ``step`` goes to ``run_evaluation``'s ``on_step``, ``overall`` to its
    ``progress(done, total)``; ``clip_done(triplets)`` is called when a clip's scores are in.
    """

    def step(self, position: Step) -> None:
        pass

    def overall(self, done: int, total: int | None) -> None:
        pass

    def clip_done(self, triplets: int) -> None:
        pass


def _fraction(done: int, total: int | None) -> str:
    return f"{done}/{total} ({100 * done // total}%)" if total else f"{done}"


class ScoringLines(ScoringProgress):
    """A plain line per milestone, for logs: when a clip starts or passes another tenth,
    but at most one line every ``min_gap_s``; and at least one every ``every_s``. On the
    run's first triplet a line also comes as each method starts, since that is when a
    model warms up (seconds, against a fraction of one on later frames): the log says
    which method it is waiting for, not only the first."""

    def __init__(self, description: str, write: Callable[[str], None], *, unit: str = "triplets",
                 every_s: float = 30.0, min_gap_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.description, self.write, self.unit = description, write, unit
        self.every_s, self.min_gap_s, self.clock = every_s, min_gap_s, clock
        self.started = clock()
        self.last_line: float | None = None
        self.milestone: tuple[str, int | None] | None = None
        self.method: str | None = None

    def step(self, position: Step) -> None:
        now = self.clock()
        p = position
        tenth = 10 * p.done // p.total if p.total else None
        milestone = (p.sample, tenth)
        due = (
            self.last_line is None
            or now - self.last_line >= self.every_s
            or (milestone != self.milestone and now - self.last_line >= self.min_gap_s)
            or (p.overall_done == 0 and p.method != self.method)
        )
        self.method = p.method
        if not due:
            return
        self.last_line, self.milestone = now, milestone
        line = (f"{self.description}: {p.sample} ({p.number}/{p.samples}): "
                f"{_fraction(p.done, p.total)} {self.unit} scored, now {p.method}")
        if p.samples > 1:
            line += f"; all clips {_fraction(p.overall_done, p.overall_total)}"
        self.write(f"{line} [{now - self.started:.0f} s]")


class ScoringBar(ScoringProgress):
    """Two rich bars: every triplet of the run, and the clip being scored with its method."""

    def __init__(self, bar: Progress, description: str) -> None:
        self.bar = bar
        self.all = bar.add_task(description, total=None, rate=0.0)
        self.clip = bar.add_task("", total=None, rate=0.0, visible=False)
        self.sample: str | None = None

    def _rate(self, task: TaskID, done: int) -> float:
        elapsed = self.bar.tasks[task].elapsed or 0.0
        return done / elapsed if elapsed > 0 else 0.0

    def step(self, position: Step) -> None:
        p = position
        if p.sample != self.sample:
            self.sample = p.sample
            self.bar.reset(self.clip, total=p.total, visible=True)
        self.bar.update(self.clip, completed=p.done, total=p.total, rate=self._rate(self.clip, p.done),
                        description=f"  {p.sample} ({p.number}/{p.samples}): {p.method}")

    def overall(self, done: int, total: int | None) -> None:
        self.bar.update(self.all, completed=done, total=total, rate=self._rate(self.all, done))

    def clip_done(self, triplets: int) -> None:
        # Video counts are estimates: show the clip as complete at what it really had.
        self.bar.update(self.clip, completed=triplets, total=triplets, rate=self._rate(self.clip, triplets))


@contextmanager
def scoring_progress(*, mode: str, description: str, unit: str = "triplets") -> Iterator[ScoringProgress]:
    """``mode`` "bar" (a terminal), "lines" (stderr is a log or a pipe) or "off"."""
    if mode == "lines":
        yield ScoringLines(description, lambda text: click.echo(text, err=True), unit=unit)
        return
    if mode != "bar":
        yield ScoringProgress()
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]:.1f}} {unit}/s"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    # Results printed meanwhile go above the bars only when stdout is this terminal too;
    # redirected to a file they must stay there, not be drawn on stderr.
    with Progress(*columns, console=Console(stderr=True), redirect_stdout=sys.stdout.isatty()) as bar:
        yield ScoringBar(bar, description)
