"""``sepconv interpolate``: double (×4, ×8) a video's frame rate, or set it (``--fps``)."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import click

from sepconv_cli.commands.adapting import DEFAULT_BUDGET, Duration, adapt_source
from sepconv_cli.commands.batch import batch_progress
from sepconv_cli.commands.progress import frame_progress, silence_info
from sepconv_cli.engine import PRECISIONS, Interpolator, Tiling
from sepconv_cli.ext import OP_IMPLS
from sepconv_cli.models.registry import MODELS, default_weights, load_weights
from sepconv_cli.duplicates import AUTO as DEDUP_AUTO
from sepconv_cli.duplicates import DEFAULT_THRESHOLD as DEDUP_THRESHOLD
from sepconv_cli.errors import DeviceError, InputError, OutputClosed, OutputError, SepconvError, WeightsError
from sepconv_cli.images import IMAGE_SUFFIXES
from sepconv_cli.pipeline import (
    Destination,
    InterpolationReport,
    VideoOptions,
    check_paths,
    interpolate_video,
    midpoint_factor,
    retime_video,
)
from sepconv_cli.scenes import DEFAULT_THRESHOLD
from sepconv_cli.sequences import (
    DEFAULT_INPUT_RATE,
    DEFAULT_PATTERN,
    WRITABLE_SUFFIXES,
    ImageSequence,
    list_frames,
    natural_key,
)
from sepconv_cli.timespan import TimeSpan, parse_time
from sepconv_cli.video import PIPE_FORMATS, Pipe, probe

DEFAULT_MODEL = "flowsep"


class OneLineUsageError(click.UsageError):
    """Bad command-line usage shown as ``error: <message>`` (exit 2), like the library's errors."""

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.format_message()}", err=True)


class FrameRate(click.ParamType):
    """A frame rate as an exact fraction: ``60``, ``59.94``, ``30000/1001``."""

    name = "rate"

    def convert(self, value, param, ctx) -> Fraction:  # noqa: ANN001 - click's signature
        if isinstance(value, Fraction):
            return value
        text = str(value).strip()
        try:
            rate = Fraction(text)
        except (ValueError, ZeroDivisionError):
            rate = None
        if rate is None or rate <= 0 or rate > 1000:
            option = param.opts[0] if param is not None and param.opts else "--fps"
            raise OneLineUsageError(
                f"{option} {text!r} is not a frame rate; give a positive number or fraction up to 1000 "
                "such as 60, 59.94 or 30000/1001", ctx=ctx,
            )
        return rate


class DedupThreshold(click.ParamType):
    """``auto`` or a number of 8-bit levels from 0 to 255."""

    name = "levels"

    def convert(self, value, param, ctx) -> float | str:  # noqa: ANN001 - click's signature
        if isinstance(value, float) or value == DEDUP_AUTO:
            return value
        try:
            levels = float(str(value).strip())
        except ValueError:
            levels = -1.0
        if not 0 <= levels <= 255:
            raise OneLineUsageError(f"--dedup-threshold {value!r}: give auto or a number of levels from 0 to 255",
                                    ctx=ctx)
        return levels


class TimeValue(click.ParamType):
    """A time as exact seconds: ``12.5``, ``1:02.5``, ``01:02:03.250``."""

    name = "time"

    def convert(self, value, param, ctx) -> Fraction:  # noqa: ANN001 - click's signature
        if isinstance(value, Fraction):
            return value
        option = param.opts[0] if param is not None and param.opts else "TIME"
        try:
            return parse_time(str(value))
        except ValueError as error:
            raise OneLineUsageError(f"{option}: {error}", ctx=ctx) from None


def time_span(start: Fraction | None, duration: Fraction | None, ctx: click.Context) -> TimeSpan | None:
    """``--start``/``--duration`` as a ``TimeSpan`` (None when neither is given)."""
    if start is None and duration is None:
        return None
    if duration is not None and duration <= 0:
        raise OneLineUsageError(f"--duration must be more than 0 s, not {float(duration):g}", ctx=ctx)
    return TimeSpan(start or Fraction(0), duration)


def format_rate(rate: Fraction) -> str:
    """``60``, ``59.94``: short enough for a file name (three decimals at most)."""
    if rate.denominator == 1:
        return str(rate.numerator)
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")


def default_output(source: Path | ImageSequence, factor: int, lossless: bool, fps: Fraction | None = None) -> Destination:
    """``clip.mp4`` → ``clip.2x.mp4``; a frame folder ``shot/`` → ``shot.2x/`` (same names)."""
    tag = f"{format_rate(fps)}fps" if fps is not None else f"{factor}x"
    if isinstance(source, ImageSequence):
        folder = source.folder.resolve()
        pattern = source.pattern
        if pattern is None:
            try:
                suffix = list_frames(source)[0].suffix.lower()
            except InputError:
                suffix = ".png"  # the run itself reports what is wrong with the frames
            # JPEG in: PNG out, so the new frames are not compressed a second time.
            pattern = DEFAULT_PATTERN if suffix not in WRITABLE_SUFFIXES or suffix in (".jpg", ".jpeg") \
                else DEFAULT_PATTERN.replace(".png", suffix)
        return ImageSequence(folder.with_name(f"{folder.name}.{tag}"), pattern)
    suffix = ".mkv" if lossless else source.suffix or ".mp4"
    return source.with_name(f"{source.stem}.{tag}{suffix}")


def _has_images(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") for p in folder.iterdir())
    except OSError:
        return False


def resolve_source(text: str, input_fps: Fraction) -> Path | ImageSequence:
    """What SOURCE names: a frame pattern (``%`` in the file name), a folder of frames,
    or a video file."""
    path = Path(text)
    if "%" in path.name:
        return ImageSequence.parse(text, input_fps)
    if path.is_dir():
        if _has_images(path):
            return ImageSequence(path, None, input_fps)
        raise InputError(f"no image files in the folder {path}; give frames (.png, .tif, .jpg) or a video file")
    return path


def resolve_output(text: str) -> Destination:
    """What ``--out`` names: a frame pattern, a folder for frames (an existing one, a name
    ending in a slash, or a name without an extension), or a video file."""
    path = Path(text)
    if "%" in path.name or "%" in str(path.parent):
        try:
            return ImageSequence.parse(text)
        except InputError as error:
            raise OneLineUsageError(f"--out {text}: {error}") from None
    if text.endswith(("/", "\\")) or path.is_dir() or not path.suffix:
        return ImageSequence(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise OneLineUsageError(
            f"--out {text}: for image frames give a pattern such as {path.parent / ('%06d' + path.suffix)} "
            "or a folder"
        )
    return path


def _output_parent(dst: Destination) -> Path | None:
    """The folder an output is written into (a frame folder's parent); None for a stream."""
    if isinstance(dst, Pipe):
        return None
    if isinstance(dst, ImageSequence):
        return dst.folder.absolute().parent
    return Path(dst).absolute().parent


def make_folders(folder: Path | None) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those made, outermost first."""
    missing: list[Path] = []
    current = folder
    while current is not None and not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    missing.reverse()
    for index, path in enumerate(missing):
        try:
            path.mkdir()
        except OSError as exc:
            remove_empty(missing[:index])
            raise OutputError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders ``make_folders`` made, innermost first, as long as they are empty."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            return  # not empty (the output is in it) or already gone


def _name(target: Path | ImageSequence | Pipe) -> str:
    return target.name if isinstance(target, (Path, Pipe)) else target.name.rstrip("/\\")


class _FdWriter(io.RawIOBase):
    """Writes all of every buffer to a file descriptor (a raw pipe may take part of one),
    and buffers nothing, so closing after the reader has gone cannot fail again."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001 - bytes-like
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        return done

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self.fd)
            except OSError:
                pass
        super().close()


def stdout_stream() -> io.RawIOBase | BinaryIO:
    """stdout for the video stream alone. Its file descriptor is duplicated for the
    stream and fd 1 then points at stderr, so nothing else that writes to stdout (a
    library, a compiler's message) can corrupt the stream."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return click.get_binary_stream("stdout")  # not a real descriptor (e.g. click's test runner)
    sys.stdout.flush()
    stream_fd = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    return _FdWriter(stream_fd)


def stdin_stream() -> io.RawIOBase | BinaryIO:
    """stdin, unbuffered: a read returns what the pipe has (no waiting for a full buffer),
    and a read left blocked by Ctrl-C holds no buffer lock that would abort Python's exit."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return click.get_binary_stream("stdin")  # not a real descriptor (e.g. click's test runner)
    return io.FileIO(os.dup(fd), "rb")


@dataclass(frozen=True)
class RunSettings:
    """The options every file of a run shares."""

    fps: Fraction | None
    factor: int
    dedup: float | str | None
    input_fps_given: bool
    options: VideoOptions


VIDEO_SUFFIXES = frozenset({
    ".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
    ".ogv", ".3gp", ".y4m", ".nut", ".mxf",
})


def _videos_in(folder: Path) -> list[Path]:
    try:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return []
    return sorted((p for p in files if p.suffix.lower() in VIDEO_SUFFIXES), key=lambda p: natural_key(p.name))


def expand_sources(texts: tuple[str, ...], input_fps: Fraction) -> tuple[list[Path | ImageSequence], bool]:
    """The inputs SOURCE... names and whether this is a batch (one output each): several
    SOURCEs, or a folder holding videos rather than frames (its videos, in natural order)."""
    inputs: list[Path | ImageSequence] = []
    batch = len(texts) > 1
    for text in texts:
        path = Path(text)
        if "%" not in path.name and path.is_dir() and not _has_images(path):
            videos = _videos_in(path)
            if not videos:
                raise InputError(f"no frames or videos in the folder {path}")
            inputs.extend(videos)
            batch = True
        else:
            inputs.append(resolve_source(text, input_fps))
    return inputs, batch


def plan_outputs(
    inputs: list[Path | ImageSequence | Pipe], output: str | None, batch: bool, factor: int, lossless: bool,
    fps: Fraction | None, stream_format: str | None, ctx: click.Context,
) -> list[tuple[Path | ImageSequence | Pipe, Destination]]:
    """Each input with its output: the one OUT, or in a batch one per input in the folder
    OUT (created if missing) or beside the input, named as the default output is."""
    if not batch:
        src = inputs[0]
        if output == "-":
            return [(src, Pipe(None, PIPE_FORMATS[stream_format or "y4m"], "stdout"))]
        return [(src, resolve_output(output) if output is not None else default_output(src, factor, lossless, fps))]
    folder: Path | None = None
    if output is not None:
        folder = Path(output)
        # A trailing slash names a folder, whatever its name looks like ("clips.60/").
        named_folder = output.endswith(("/", "\\"))
        if output == "-" or "%" in output or (folder.suffix and not named_folder and not folder.is_dir()):
            raise OneLineUsageError(
                f"--out {output}: several inputs need a folder for their outputs (e.g. --out done/)", ctx=ctx)
        if folder.exists() and not folder.is_dir():
            raise OneLineUsageError(f"--out {output} is a file; several inputs need a folder", ctx=ctx)
    jobs = []
    seen: dict[str, str] = {}
    for src in inputs:
        dst = default_output(src, factor, lossless, fps)
        if folder is not None:
            dst = folder / dst.name if isinstance(dst, Path) else ImageSequence(folder / dst.folder.name, dst.pattern)
        key = str(Path(dst if isinstance(dst, Path) else dst.folder).absolute())
        if key in seen:
            raise OneLineUsageError(f"{seen[key]} and {_name(src)} would both be written to {key}", ctx=ctx)
        seen[key] = _name(src)
        jobs.append((src, dst))
    return jobs


def check_rate(src: Path | ImageSequence | Pipe, settings: RunSettings, interpolator: Interpolator,
               ctx: click.Context) -> int:
    """The factor a midpoint-only model uses for ``--fps`` (2, 4 or 8 × the input's rate),
    else ``settings.factor``; a usage error when no factor gives that rate."""
    fps = settings.fps
    if fps is None or interpolator.any_time:
        return settings.factor
    name = getattr(interpolator.model, "name", None) or "this model"
    if isinstance(src, Pipe):
        raise OneLineUsageError(
            f"--fps with {name}, which only predicts midpoints, needs the input's rate before reading it; "
            "with SOURCE - use --factor 2, 4 or 8, or --model flowsep", ctx=ctx,
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
        raise OneLineUsageError(
            f"--fps {format_rate(fps)}: {name} only predicts midpoints, so it can only make {can}; "
            "use --model flowsep for any rate", ctx=ctx,
        )
    return multiplier


def run_one(src: Path | ImageSequence | Pipe, dst: Destination, interpolator: Interpolator, settings: RunSettings,
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


def describe(src: Path | ImageSequence | Pipe, dst: Destination, settings: RunSettings) -> str:
    described = _name(src)
    if isinstance(src, ImageSequence):
        # Frames carry no rate: say which one was assumed, so a wrong guess is noticed.
        described += f" ({format_rate(src.rate)} fps{'' if settings.input_fps_given else ', --input-fps'})"
    return f"{described} → {_name(dst)}"


def report_line(report: InterpolationReport, src: Path | ImageSequence | Pipe, settings: RunSettings) -> str:
    line = report.summary()
    if isinstance(src, ImageSequence) and not settings.input_fps_given:
        line += f" (frames taken as {format_rate(src.rate)} fps; set --input-fps)"
    return line


def _estimate(src: Path | ImageSequence | Pipe) -> int | None:
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


def run_batch(jobs: list[tuple[Path | ImageSequence | Pipe, Destination]], load: Callable[[Path | None], Interpolator],
              settings: RunSettings, ctx: click.Context, *, quiet: bool, started: float,
              adapt: Callable[[Path | ImageSequence | Pipe], Path | None] | None = None) -> int:
    """Run every job with one model (``adapt``: a model adapted to each input, whose
    weights ``adapt(src)`` returns, None for the original ones); a failing file is reported
    and the rest go on.

    Returns the exit code: 0 when every file succeeded, else the failures' code when
    they share one, else 1. Ctrl-C stops the whole batch (files already done are kept).
    """
    names = [_name(src) for src, _ in jobs]
    failures: list[tuple[str, int]] = []
    interpolator: Interpolator | None = None
    estimates = [_estimate(src) for src, _ in jobs]
    with batch_progress(bars=sys.stderr.isatty(), names=names, estimates=estimates, quiet=quiet) as display:
        for index, (src, dst) in enumerate(jobs):
            display.start(index)
            try:
                check_paths(src, dst, settings.options.overwrite)
                if adapt is not None:
                    interpolator = load(adapt(src))
                elif interpolator is None:
                    interpolator = load(None)  # once, and only when some file can be read
                multiplier = check_rate(src, settings, interpolator, ctx)
                report = run_one(src, dst, interpolator, settings, display.frames, multiplier)
            except (SepconvError, click.ClickException) as error:
                code = error.exit_code
                message = error.format_message() if isinstance(error, click.ClickException) else str(error)
                if isinstance(error, (WeightsError, DeviceError)):
                    raise  # the model, not this file: every other file would fail the same way
                if isinstance(error, click.UsageError) and "--dedup needs" in message:
                    raise
                failures.append((names[index], code))
                display.finish(index, False, f"{names[index]}: error: {message}")
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


@click.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--out", "-o", "output", metavar="OUT",
              help="Output video, or frames: a folder or a pattern such as frames/%06d.png "
                   "[default: SOURCE.2x.ext (.4x, .8x, .60fps; .mkv with --lossless); frames: SOURCE.2x/].")
@click.option("--input-fps", type=FrameRate(), metavar="RATE",
              help=f"Frame rate of an image-sequence SOURCE [default: {DEFAULT_INPUT_RATE}].")
@click.option("--model", type=click.Choice(sorted(MODELS)), default=DEFAULT_MODEL, show_default=True,
              help="Network; its shipped weights are used unless --weights is given (then the file's own network, "
                   "unless --model is given too). flowsep predicts any time (any --fps); sepconv and dsepconv only "
                   "midpoints (--factor, or --fps of 2, 4 or 8 × the input's).")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), help="Weights file to use instead.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Arithmetic of the network (bf16/fp16 autocast); the kernels always sum in fp32.")
@click.option("--factor", type=click.Choice(["2", "4", "8"]), default="2", show_default=True,
              help="Frame-rate multiplier, by recursive midpoints. Not with --fps.")
@click.option("--fps", type=FrameRate(), metavar="RATE",
              help="Output frame rate instead of --factor, e.g. 60, 59.94 or 30000/1001, higher or lower than the "
                   "input's: frame k at exactly k/RATE s, input frames kept where the times coincide.")
@click.option("--codec", default=None,
              help="Video encoder (e.g. libx265, h264_nvenc) [default: libx264; libvpx-vp9 in .webm, mpeg2video in "
                   ".mpg: the container's usual one where it cannot hold H.264].")
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True,
              help="Quality on x264's scale (lower is better); translated for VP9 and MPEG-2.")
@click.option("--preset", default="medium", show_default=True, help="Encoder speed preset.")
@click.option("--lossless", is_flag=True, help="Write lossless FFV1 in Matroska (.mkv) instead.")
@click.option("--scene-threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Histogram distance (0-1) above which two frames count as a shot cut and are not blended; 0 disables.")
@click.option("--dedup", is_flag=True,
              help="Drop repeated frames (animation on twos, a recording that stands still) and interpolate between "
                   "the distinct ones at their true times, so motion is even; long still stretches stay still.")
@click.option("--dedup-threshold", type=DedupThreshold(), default=DEDUP_THRESHOLD, show_default=True,
              help="With --dedup: auto (learnt from the clip's own compression noise) or the most 8-bit levels by "
                   "which an 8x8 block of a copy may differ on average, in its most-changed colour channel.")
@click.option("--adapt", type=Duration(), is_flag=False, flag_value=DEFAULT_BUDGET, default=None, metavar="[DURATION]",
              help=f"First fine-tune the model on the input's own frames for about DURATION (e.g. 5m, 90s; "
                   f"{DEFAULT_BUDGET} if not given), then interpolate with the adapted weights where they beat the "
                   "original ones on frames held out from it. Kept adaptations are reused.")
@click.option("--save-adapted", type=click.Path(path_type=Path, dir_okay=False),
              help="With --adapt: also write the weights used to this file (for --weights later).")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True, help="New frames per network call.")
@click.option("--tile", type=click.IntRange(0), default=Tiling.tile, show_default=True,
              help="Tile side in pixels for frames larger than --max-pixels; 0 never tiles.")
@click.option("--max-pixels", type=click.IntRange(1), default=Tiling.max_pixels, show_default=True,
              help="Frames up to this many pixels run whole.")
@click.option("--op-impl", type=click.Choice(OP_IMPLS), default="auto", show_default=True,
              help="Local-convolution implementation: auto (compiled kernel, else PyTorch), compiled (or fail), torch.")
@click.option("--format", "stream_format", type=click.Choice(sorted(PIPE_FORMATS)), default=None,
              help="Stream format of --out - (stdout) [default: y4m]; read ffmpeg's -f yuv4mpegpipe or -f nut.")
@click.option("--start", type=TimeValue(), metavar="TIME",
              help="Begin TIME into SOURCE (seconds, e.g. 12.5, or [HH:]MM:SS[.ms]) to try settings on a part; "
                   "audio and subtitles are cut to the same part, the output starts at 0.")
@click.option("--duration", type=TimeValue(), metavar="TIME",
              help="Only this long a part of SOURCE (from --start, else the beginning).")
@click.option("--deinterlace", is_flag=True,
              help="Deinterlace interlaced video (FFmpeg's bwdif, one frame per frame) before interpolating; "
                   "without it interlaced input is interpolated as progressive, with a warning.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def interpolate(
    ctx: click.Context, sources: tuple[str, ...], output: str | None, input_fps: Fraction | None, model: str, weights: Path | None, device: str,
    precision: str, factor: str, fps: Fraction | None, codec: str | None, crf: int, preset: str, lossless: bool,
    scene_threshold: float, dedup: bool, dedup_threshold: float | str, adapt: float | None, save_adapted: Path | None,
    batch_size: int, tile: int, max_pixels: int, op_impl: str, stream_format: str | None,
    start: Fraction | None, duration: Fraction | None, deinterlace: bool, overwrite: bool, quiet: bool,
) -> None:
    """Write SOURCE at 2x (or --factor 4, 8) its frame rate, or at --fps RATE; audio and duration kept.

    SOURCE is a video file, a folder of frames or a frame pattern (frames/%06d.png, played
    at --input-fps), or - for a y4m or NUT stream on stdin; OUT likewise a video file, a
    folder or a pattern, or - for a stream on stdout (--format y4m or nut). Several
    SOURCEs, or a folder of videos, give one output each (in the folder --out DIR, else
    beside each input); a file that fails is reported and the others still run.
    """
    started = time.perf_counter()
    silence_info(quiet)
    given = {name for name in ("model", "factor", "codec")
             if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}
    if fps is not None and "factor" in given:
        raise OneLineUsageError("--fps and --factor both set the output frame rate; give one of them", ctx=ctx)
    if stream_format is not None and output != "-":
        raise OneLineUsageError("--format is for a stream on stdout (--out -); a file's extension sets its format",
                                ctx=ctx)
    if "-" in sources and len(sources) > 1:
        raise OneLineUsageError("SOURCE - (stdin) cannot be combined with other sources", ctx=ctx)
    span = time_span(start, duration, ctx)
    if span is not None and "-" in sources:
        raise OneLineUsageError("--start/--duration need a file or frames; a stream on stdin is read as it comes",
                                ctx=ctx)
    if sources == ("-",) and output is None:
        raise OneLineUsageError("SOURCE - (stdin) needs --out: a file, frames, or - for stdout", ctx=ctx)
    if output == "-":
        stream_format = stream_format or "y4m"
        if "codec" not in given:
            codec = "rawvideo"  # a pipe's reader wants frames, not another round of compression
        elif stream_format == "y4m" and codec != "rawvideo":
            raise OneLineUsageError(f"--codec {codec}: a y4m stream holds raw frames only; use --format nut", ctx=ctx)
    if sources == ("-",):
        inputs: list[Path | ImageSequence | Pipe] = [Pipe(stdin_stream(), None, "stdin")]
        batch = False
    else:
        inputs, batch = expand_sources(sources, input_fps or DEFAULT_INPUT_RATE)
    if input_fps is not None and not any(isinstance(src, ImageSequence) for src in inputs):
        raise OneLineUsageError(
            "--input-fps is for image sequences; a video states its own frame rate", ctx=ctx)
    jobs = plan_outputs(inputs, output, batch, int(factor), lossless, fps, stream_format, ctx)

    settings = RunSettings(
        fps=fps, factor=int(factor), dedup=dedup_threshold if dedup else None, input_fps_given=input_fps is not None,
        options=VideoOptions(
            factor=int(factor), codec=codec, crf=crf, preset=preset, lossless=lossless,
            overwrite=overwrite, scene_threshold=scene_threshold, batch_size=batch_size,
            dedup=dedup_threshold if dedup else None, span=span, deinterlace=deinterlace,
        ),
    )

    if save_adapted is not None and adapt is None:
        raise OneLineUsageError("--save-adapted needs --adapt", ctx=ctx)
    if save_adapted is not None and batch:
        raise OneLineUsageError("--save-adapted names one file: with several inputs each keeps its own "
                                "adaptation (reused on the next run)", ctx=ctx)

    def base_weights() -> Path:
        return weights if weights is not None else default_weights(model)

    def adapted(src: Path | ImageSequence | Pipe) -> Path | None:
        """The adapted weights for ``src``; None (the original weights) where it cannot be adapted to."""
        result = adapt_source(src, base_weights(), adapt, total=None if span else _estimate(src), save=save_adapted,
                              quiet=quiet, span=span, deinterlace=deinterlace, device=device)
        return result.weights if result is not None else None

    def load(chosen: Path | None = None) -> Interpolator:
        if chosen is not None:
            network = load_weights(chosen)
        elif weights is not None:
            # A weights file names its network: use it, unless --model asks for a particular one.
            network = load_weights(weights, model=model if "model" in given else None)
        else:
            network = load_weights(default_weights(model), model=model)
        interpolator = Interpolator(
            network, device=device, precision=precision, op_impl=op_impl,
            tiling=Tiling(tile=tile, context=Tiling.context, max_pixels=max_pixels),
        )
        if dedup and not interpolator.any_time:
            raise OneLineUsageError(
                f"--dedup needs a model that predicts any time (new frames fall at uneven fractions between the "
                f"distinct frames); {getattr(network, 'name', model)} only predicts midpoints: use --model flowsep",
                ctx=ctx,
            )
        return interpolator

    if not batch:
        src, dst = jobs[0]
        # Missing folders above OUT are made, as a batch makes its --out folder, and
        # removed again when the command ends if nothing was written into them.
        made = make_folders(_output_parent(dst))
        ctx.call_on_close(lambda: remove_empty(made))
        # Fail on a typo in a path before spending seconds loading a network.
        check_paths(src, dst, overwrite)
        if isinstance(dst, Pipe):
            # From here on nothing but the stream may reach stdout (not even the messages
            # of a kernel built while the model loads).
            dst = Pipe(stdout_stream(), dst.format, dst.name)
        interpolator = load(adapted(src) if adapt is not None else None)
        multiplier = check_rate(src, settings, interpolator, ctx)
        try:
            with frame_progress(enabled=not quiet, lines=not sys.stderr.isatty(),
                                description=describe(src, dst, settings)) as progress:
                report = run_one(src, dst, interpolator, settings, progress, multiplier)
        except OutputClosed as closed:
            # The reader took what it wanted (``| head``, ``ffmpeg -frames:v N``): not a failure.
            if not quiet:
                click.echo(f"note: {closed}; stopped", err=True)
            return
        finally:
            if isinstance(dst, Pipe) and isinstance(dst.file, _FdWriter):
                dst.file.close()  # our own descriptor; a borrowed stream stays open
        if not quiet:
            click.echo(f"{report_line(report, src, settings)} on {interpolator.device} "
                       f"({time.perf_counter() - started:.1f} s in all)", err=True)
        return

    # The outputs' folder (and any missing above it), made now so each file's checks
    # pass; removed again if nothing was written into it.
    made = make_folders(Path(output)) if output is not None else []
    ctx.call_on_close(lambda: remove_empty(made))
    code = run_batch(jobs, load, settings, ctx, quiet=quiet, started=started,
                     adapt=adapted if adapt is not None else None)
    if code:
        ctx.exit(code)
