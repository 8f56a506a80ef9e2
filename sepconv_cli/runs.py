"""A run of ``interpolate`` over its planned jobs (``outputs.plan_outputs``): the settings
every file shares, the model loaded for them, which frame-rate multiplier a midpoint-only
model needs for ``--fps``, one input through the pipeline, and a batch in which a failing
file is reported while the others go on.

Progress and messages go to the callbacks and display the caller passes; nothing here
prints. Bad requests raise ``errors.UsageError`` (exit code 2).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from sepconv_cli.engine import Interpolator, Tiling
from sepconv_cli.errors import DeviceError, ModelUsageError, SepconvError, UsageError, WeightsError
from sepconv_cli.models.registry import default_weights, load_weights
from sepconv_cli.outputs import Input, Job, display_name, format_rate
from sepconv_cli.pipeline import InterpolationReport, VideoOptions, check_paths, interpolate_video, midpoint_factor, retime_video
from sepconv_cli.sequences import ImageSequence, list_frames
from sepconv_cli.sinks import Destination
from sepconv_cli.video import Pipe, probe


@dataclass(frozen=True)
class RunSettings:
    """The options every file of a run shares."""

    fps: Fraction | None
    factor: int
    dedup: float | str | None
    input_fps_given: bool
    options: VideoOptions


@dataclass(frozen=True)
class ModelChoice:
    """Which network a run loads and how it runs it."""

    model: str
    weights: Path | None = None
    model_given: bool = False  # --model named: it overrides the network a weights file names
    device: str = "auto"
    precision: str = "fp32"
    op_impl: str = "auto"
    tiling: Tiling = Tiling()

    def base_weights(self) -> Path:
        """The weights before any adaptation: the file given, else the model's shipped ones."""
        return self.weights if self.weights is not None else default_weights(self.model)


def load_interpolator(choice: ModelChoice, chosen: Path | None = None, *, dedup: bool = False) -> Interpolator:
    """The interpolator for ``choice`` (``chosen``: adapted weights used instead); a usage
    error when ``dedup`` asks for times the network cannot predict."""
    if chosen is not None:
        network = load_weights(chosen)
    elif choice.weights is not None:
        # A weights file names its network: use it, unless --model asks for a particular one.
        network = load_weights(choice.weights, model=choice.model if choice.model_given else None)
    else:
        network = load_weights(default_weights(choice.model), model=choice.model)
    interpolator = Interpolator(network, device=choice.device, precision=choice.precision, op_impl=choice.op_impl,
                                tiling=choice.tiling)
    if dedup and not interpolator.any_time:
        raise ModelUsageError(
            f"--dedup needs a model that predicts any time (new frames fall at uneven fractions between the "
            f"distinct frames); {getattr(network, 'name', choice.model)} only predicts midpoints: use --model flowsep"
        )
    return interpolator


def check_rate(src: Input, settings: RunSettings, interpolator: Interpolator) -> int:
    """The factor a midpoint-only model uses for ``--fps`` (2, 4 or 8 × the input's rate),
    else ``settings.factor``; a usage error when no factor gives that rate."""
    fps = settings.fps
    if fps is None or interpolator.any_time:
        return settings.factor
    name = getattr(interpolator.model, "name", None) or "this model"
    if isinstance(src, Pipe):
        raise UsageError(
            f"--fps with {name}, which only predicts midpoints, needs the input's rate before reading it; "
            "with SOURCE - use --factor 2, 4 or 8, or --model flowsep"
        )
    input_rate = src.rate if isinstance(src, ImageSequence) else probe(src).frame_rate
    # A midpoint-only network can only halve intervals: 2, 4 or 8 × the input's rate.
    multiplier = midpoint_factor(fps, input_rate)
    if multiplier is None:
        if input_rate:
            rates = ", ".join(format_rate(input_rate * k) for k in (2, 4, 8))
            can = f"{rates} fps (2, 4 or 8 × the input's {format_rate(input_rate)})"
        else:
            can = "2, 4 or 8 × the input's rate, which this file does not state"
        raise UsageError(
            f"--fps {format_rate(fps)}: {name} only predicts midpoints, so it can only make {can}; "
            "use --model flowsep for any rate"
        )
    return multiplier


def run_one(src: Input, dst: Destination, interpolator: Interpolator, settings: RunSettings,
            progress: Callable[[int, int | None], None], multiplier: int | None = None) -> InterpolationReport:
    """One input to one output with the model and settings of the run."""
    options = settings.options
    if multiplier is not None and multiplier != options.factor:
        options = replace(options, factor=multiplier)
    fps = settings.fps
    if settings.dedup is not None and fps is None:
        # --factor F with duplicates dropped: frames on the exact grid of F × the input's rate.
        factor = options.factor
        return retime_video(src, dst, interpolator.at, lambda rate: factor * rate, options=options, progress=progress)
    if fps is not None and interpolator.any_time:
        return retime_video(src, dst, interpolator.at, fps, options=options, progress=progress)
    return interpolate_video(src, dst, interpolator.midpoint, options=options, progress=progress)


def describe(src: Input, dst: Destination, settings: RunSettings) -> str:
    """``clip.mp4 → clip.2x.mp4``, with the rate assumed for frames."""
    described = display_name(src)
    if isinstance(src, ImageSequence):
        # Frames carry no rate: say which one was assumed, so a wrong guess is noticed.
        described += f" ({format_rate(src.rate)} fps{'' if settings.input_fps_given else ', --input-fps'})"
    return f"{described} → {display_name(dst)}"


def report_line(report: InterpolationReport, src: Input, settings: RunSettings) -> str:
    """The summary of one finished file, with the rate assumed for frames."""
    line = report.summary()
    if isinstance(src, ImageSequence) and not settings.input_fps_given:
        line += f" (frames taken as {format_rate(src.rate)} fps; set --input-fps)"
    return line


def estimate_frames(src: Input) -> int | None:
    """Frames in ``src`` from its headers, for the batch's total (None: unknown or unreadable)."""
    try:
        if isinstance(src, ImageSequence):
            return len(list_frames(src))
        if isinstance(src, Path):
            info = probe(src)
            if info.frames:
                return info.frames
            if info.duration and info.frame_rate:
                return max(2, round(info.duration * info.frame_rate))
    except SepconvError:
        pass
    return None


class BatchDisplay(Protocol):
    """What the batch loop reports to (``commands.batch.BatchProgress``)."""

    def start(self, index: int) -> None: ...
    def frames(self, done: int, total: int | None) -> None: ...
    def finish(self, index: int, ok: bool, line: str) -> None: ...
    def note(self, line: str) -> None: ...


def run_batch(jobs: list[Job], load: Callable[[Path | None], Interpolator], settings: RunSettings,
              display: BatchDisplay, *, started: float,
              adapt: Callable[[Input], Path | None] | None = None) -> int:
    """Run every job with one model (``adapt``: a model adapted to each input, whose
    weights ``adapt(src)`` returns, None for the original ones); a failing file is reported
    and the rest go on.

    Returns the exit code: 0 when every file succeeded, else the failures' code when
    they share one, else 1. Ctrl-C stops the whole batch (files already done are kept).
    """
    names = [display_name(src) for src, _ in jobs]
    failures: list[tuple[str, int]] = []
    interpolator: Interpolator | None = None
    for index, (src, dst) in enumerate(jobs):
        display.start(index)
        try:
            check_paths(src, dst, settings.options.overwrite)
            if adapt is not None:
                interpolator = load(adapt(src))
            elif interpolator is None:
                interpolator = load(None)  # once, and only when some file can be read
            multiplier = check_rate(src, settings, interpolator)
            report = run_one(src, dst, interpolator, settings, display.frames, multiplier)
        except SepconvError as error:
            if isinstance(error, (WeightsError, DeviceError, ModelUsageError)):
                raise  # the model, not this file: every other file would fail the same way
            failures.append((names[index], error.exit_code))
            display.finish(index, False, f"{names[index]}: error: {error}")
            continue
        except (ValueError, RuntimeError, OSError) as error:
            # Unexpected in one file (a codec's own failure): still the others go on.
            failures.append((names[index], 1))
            display.finish(index, False, f"{names[index]}: error: {type(error).__name__}: {error}")
            continue
        display.finish(index, True, report_line(report, src, settings))
    done = len(jobs) - len(failures)
    line = f"{done} of {len(jobs)} files done"
    if failures:
        line += f", {len(failures)} failed: " + ", ".join(name for name, _ in failures)
    display.note(f"{line}; {time.perf_counter() - started:.1f} s in all")
    if not failures:
        return 0
    codes = {code for _, code in failures}
    return codes.pop() if len(codes) == 1 else 1
