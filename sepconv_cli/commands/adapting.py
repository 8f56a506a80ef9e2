"""``interpolate --adapt``: the command-line side of ``sepconv_cli.adaptation``.

Reads the input's frames for the adaptation, shows its progress (a bar on a terminal,
a plain line every ``PLAIN_EVERY`` seconds otherwise), keeps the result where
``--save-adapted`` asks, and turns an input that cannot be adapted to into a warning.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import click
import numpy as np

from sepconv_cli.adaptation import (AdaptOptions, AdaptProgress, AdaptResult, AdaptWarning, CannotAdapt,
                                    adapted_weights, parse_duration)
from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.models.registry import read_weights_file
from sepconv_cli.sequences import ImageSequence, list_frames
from sepconv_cli.timespan import TimeSpan
from sepconv_cli.video import Pipe

PLAIN_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal
DEFAULT_BUDGET = "5m"


class Duration(click.ParamType):
    """``--adapt 5m``: seconds, minutes (5m), 1m30s or MM:SS."""

    name = "duration"

    def convert(self, value, param, ctx) -> float:  # noqa: ANN001 - click's signature
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _frames(src: Path | ImageSequence, span: TimeSpan | None, deinterlace: bool) -> Iterator[np.ndarray]:
    from sepconv_cli.pipeline import _open_source

    reader, _ = _open_source(src, span, deinterlace)
    with reader:
        for frame in reader:
            yield frame.rgb


def _input_files(src: Path | ImageSequence) -> list[Path]:
    return list_frames(src) if isinstance(src, ImageSequence) else [Path(src)]


@contextmanager
def adaptation_display(name: str, *, quiet: bool) -> Iterator:
    """A progress callback for ``adapted_weights``: a rich bar on a terminal, else a line
    every ``PLAIN_EVERY`` seconds; nothing with ``quiet``."""
    if quiet:
        yield lambda p: None
        return
    if not sys.stderr.isatty():
        last = [0.0]

        def plain(p: AdaptProgress) -> None:
            now = time.monotonic()
            if now - last[0] < PLAIN_EVERY:
                return
            last[0] = now
            click.echo(f"{name}: adapting: {_describe(p)}", err=True)

        yield plain
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{name}: adapting", total=None, state="")

        def fancy(p: AdaptProgress) -> None:
            bar.update(task, completed=p.done, total=p.total, state=_describe(p))

        yield fancy


def _describe(p: AdaptProgress) -> str:
    if p.phase == "triplets":
        return f"reading frames ({p.done:.0f}{'' if p.total is None else f' of {p.total:.0f}'})"
    gain = "" if p.gain is None else f", held-out {p.gain:+.2f} dB"
    return f"training, step {p.step}{gain}"


def adapt_source(src: Path | ImageSequence | Pipe, base: Path, budget: float, *, total: int | None,
                 save: Path | None, quiet: bool, span: TimeSpan | None = None,
                 deinterlace: bool = False, device: str = "auto") -> AdaptResult | None:
    """Adapt ``base`` to ``src`` (its part ``span``, deinterlaced if asked: the frames the run
    interpolates; kept adaptations reused) and, with ``save``, copy the weights to use there.

    Returns None, after one warning line, when the input cannot be adapted to (too small,
    too short, still): the run then interpolates with ``base``, which ``save`` receives.
    Raises ``InputError`` for a stream (``-``): it can be read once only."""
    if isinstance(src, Pipe):
        raise InputError("--adapt reads the input twice (to learn from it, then to interpolate it): "
                         "give a file or frames, not a stream on stdin")
    model = str(read_weights_file(base).get("model"))
    name = src.name if isinstance(src, Path) else src.folder.name
    result: AdaptResult | None = None
    reason = ""
    try:
        with adaptation_display(name, quiet=quiet) as progress:
            extra = {"span": None if span is None else [str(span.start), str(span.duration)],
                     "deinterlace": deinterlace}
            result = adapted_weights(lambda: _frames(src, span, deinterlace), _input_files(src), base,
                                     AdaptOptions(budget=budget), total=total, model=model, extra_key=extra,
                                     device=device, progress=progress)
    except CannotAdapt as exc:
        reason = str(exc)
    if save is not None:
        _save_copy(result.weights if result is not None else base, save)
    saved = f"; weights saved to {save}" if save else ""
    if result is None:
        # Asking for better quality is no reason to fail: the output is still made, as without --adapt.
        warnings.warn(f"{name}: not adapted: {reason}; interpolating with the original weights{saved}",
                      AdaptWarning, stacklevel=2)
    elif not quiet:
        click.echo(f"{name}: {result.summary()}{saved}", err=True)
    return result


def _save_copy(weights: Path, save: Path) -> None:
    """Copy ``weights`` to ``save`` through a partial file, so a failed copy leaves no file under that name."""
    try:
        save.parent.mkdir(parents=True, exist_ok=True)
        partial = save.with_name(f".{save.name}.partial")
        shutil.copyfile(weights, partial)
        partial.replace(save)
    except OSError as exc:
        with suppress(OSError):
            save.with_name(f".{save.name}.partial").unlink(missing_ok=True)
        raise OutputError(f"cannot write {save}: {exc.strerror or exc}") from None
