"""``sepconv interpolate``: double (×4, ×8) a video's frame rate, or set it (``--fps``).

The command parses options and shows progress; naming the outputs is ``outputs``'s, the
run itself ``runs``'s, the pipes ``streams``'s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import click

from sepconv_cli.commands.adapting import DEFAULT_BUDGET, Duration, adapt_source
from sepconv_cli.commands.batch import batch_progress
from sepconv_cli.commands.options import DedupThreshold, FrameRate, OneLineUsageError, TimeValue, time_span
from sepconv_cli.commands.progress import frame_progress, silence_info
from sepconv_cli.duplicates import DEFAULT_THRESHOLD as DEDUP_THRESHOLD
from sepconv_cli.engine import PRECISIONS, Interpolator, Tiling
from sepconv_cli.errors import OutputClosed
from sepconv_cli.ext import OP_IMPLS
from sepconv_cli.models.registry import MODELS
from sepconv_cli.outputs import (VIDEO_SUFFIXES, default_output, display_name, expand_sources, format_rate,
                                 make_folders, output_parent, plan_outputs, remove_empty, resolve_output,
                                 resolve_source)
from sepconv_cli.pipeline import VideoOptions, check_paths
from sepconv_cli.runs import (ModelChoice, RunSettings, check_rate, describe, estimate_frames, load_interpolator,
                              report_line, run_batch, run_one)
from sepconv_cli.scenes import DEFAULT_THRESHOLD
from sepconv_cli.sequences import DEFAULT_INPUT_RATE, ImageSequence
from sepconv_cli.sinks import Destination
from sepconv_cli.streams import FdWriter, stdin_stream, stdout_stream
from sepconv_cli.timespan import TimeSpan
from sepconv_cli.video import PIPE_FORMATS, Pipe

# Names that lived here before the core moved out, for code that imports them from here.
__all__ = ["DEFAULT_MODEL", "VIDEO_SUFFIXES", "DedupThreshold", "FrameRate", "OneLineUsageError", "RunSettings",
           "TimeValue", "check_rate", "default_output", "describe", "expand_sources", "format_rate", "interpolate",
           "make_folders", "plan_outputs", "remove_empty", "report_line", "resolve_output", "resolve_source",
           "run_batch", "run_one", "stdin_stream", "stdout_stream", "time_span"]

DEFAULT_MODEL = "flowsep"


def _binary(name: str) -> Callable[[], BinaryIO]:
    return lambda: click.get_binary_stream(name)  # click's test runner captures without a descriptor


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
              help="Arithmetic of the network (bf16/fp16 autocast); the kernels always sum in fp32. "
                   "auto: bf16 on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32.")
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
              help="Histogram distance (0-1) above which two frames count as a shot cut and are not blended "
                   "(a quarter of it where their layouts differ too); 0 disables.")
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
    span, stream_format, codec = _check_streams(ctx, sources, output, fps, given, stream_format, codec, start,
                                                duration)
    if sources == ("-",):
        inputs: list[Path | ImageSequence | Pipe] = [Pipe(stdin_stream(_binary("stdin")), None, "stdin")]
        batch = False
    else:
        inputs, batch = expand_sources(sources, input_fps or DEFAULT_INPUT_RATE)
    if input_fps is not None and not any(isinstance(src, ImageSequence) for src in inputs):
        raise OneLineUsageError(
            "--input-fps is for image sequences; a video states its own frame rate", ctx=ctx)
    jobs = plan_outputs(inputs, output, batch, int(factor), lossless, fps, stream_format)

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
    choice = ModelChoice(model, weights, "model" in given, device, precision, op_impl,
                         Tiling(tile=tile, context=Tiling.context, max_pixels=max_pixels))

    def adapted(src: Path | ImageSequence | Pipe) -> Path | None:
        """The adapted weights for ``src``; None (the original weights) where it cannot be adapted to."""
        result = adapt_source(src, choice.base_weights(), adapt, total=None if span else estimate_frames(src),
                              save=save_adapted, quiet=quiet, span=span, deinterlace=deinterlace, device=device)
        return result.weights if result is not None else None

    def load(chosen: Path | None = None) -> Interpolator:
        return load_interpolator(choice, chosen, dedup=dedup)

    if not batch:
        _run_single(ctx, *jobs[0], load, settings, adapted if adapt is not None else None, quiet=quiet,
                    started=started)
        return

    # The outputs' folder (and any missing above it), made now so each file's checks
    # pass; removed again if nothing was written into it.
    made = make_folders(Path(output)) if output is not None else []
    ctx.call_on_close(lambda: remove_empty(made))
    names = [display_name(src) for src, _ in jobs]
    estimates = [estimate_frames(src) for src, _ in jobs]
    with batch_progress(bars=sys.stderr.isatty(), names=names, estimates=estimates, quiet=quiet) as display:
        code = run_batch(jobs, load, settings, display, started=started,
                         adapt=adapted if adapt is not None else None)
    if code:
        ctx.exit(code)


def _check_streams(ctx: click.Context, sources: tuple[str, ...], output: str | None, fps: Fraction | None,
                   given: set[str], stream_format: str | None, codec: str | None, start: Fraction | None,
                   duration: Fraction | None) -> tuple[TimeSpan | None, str | None, str | None]:
    """The options that contradict each other or a stream (``-``), in the order they are
    reported; returns the part to cut and the stream's format and codec."""
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
    return span, stream_format, codec


def _run_single(ctx: click.Context, src: Path | ImageSequence | Pipe, dst: Destination,
                load: Callable[[Path | None], Interpolator], settings: RunSettings,
                adapt: Callable[[Path | ImageSequence | Pipe], Path | None] | None, *, quiet: bool,
                started: float) -> None:
    """One input to its output with a frame progress bar (a batch has its own display)."""
    # Missing folders above OUT are made, as a batch makes its --out folder, and
    # removed again when the command ends if nothing was written into them.
    made = make_folders(output_parent(dst))
    ctx.call_on_close(lambda: remove_empty(made))
    # Fail on a typo in a path before spending seconds loading a network.
    check_paths(src, dst, settings.options.overwrite)
    if isinstance(dst, Pipe):
        # From here on nothing but the stream may reach stdout (not even the messages
        # of a kernel built while the model loads).
        dst = Pipe(stdout_stream(_binary("stdout")), dst.format, dst.name)
    interpolator = load(adapt(src) if adapt is not None else None)
    multiplier = check_rate(src, settings, interpolator)
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
        if isinstance(dst, Pipe) and isinstance(dst.file, FdWriter):
            dst.file.close()  # our own descriptor; a borrowed stream stays open
    if not quiet:
        click.echo(f"{report_line(report, src, settings)} on {interpolator.device} "
                   f"({time.perf_counter() - started:.1f} s in all)", err=True)
