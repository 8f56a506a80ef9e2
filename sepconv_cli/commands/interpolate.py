"""``sepconv interpolate``: double (or ×4, ×8) a video's frame rate."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from sepconv_cli.commands.progress import frame_progress, silence_info
from sepconv_cli.engine import PRECISIONS, Interpolator, Tiling
from sepconv_cli.ext import OP_IMPLS
from sepconv_cli.models.registry import MODELS, default_weights, load_weights
from sepconv_cli.pipeline import VideoOptions, check_paths, interpolate_video
from sepconv_cli.scenes import DEFAULT_THRESHOLD
from sepconv_cli.video import probe


def default_output(source: Path, factor: int, lossless: bool) -> Path:
    suffix = ".mkv" if lossless else source.suffix or ".mp4"
    return source.with_name(f"{source.stem}.{factor}x{suffix}")


@click.command()
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "-o", "output", type=click.Path(path_type=Path, dir_okay=False),
              help="Output video [default: SOURCE.2x.ext (.4x, .8x; .mkv with --lossless)].")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="sepconv", show_default=True,
              help="Network; the shipped weights for it are used unless --weights is given.")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), help="Weights file to use instead.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Arithmetic of the network (bf16/fp16 autocast); the kernels always sum in fp32.")
@click.option("--factor", type=click.Choice(["2", "4", "8"]), default="2", show_default=True,
              help="Frame-rate multiplier, by recursive midpoints.")
@click.option("--codec", default="libx264", show_default=True, help="Video encoder (e.g. libx265, h264_nvenc).")
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True, help="Quality for x264/x265 (lower is better).")
@click.option("--preset", default="medium", show_default=True, help="Encoder speed preset.")
@click.option("--lossless", is_flag=True, help="Write lossless FFV1 in Matroska (.mkv) instead.")
@click.option("--scene-threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Histogram distance (0-1) above which two frames count as a shot cut and are not blended; 0 disables.")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True, help="Frame pairs per network call.")
@click.option("--tile", type=click.IntRange(0), default=Tiling.tile, show_default=True,
              help="Tile side in pixels for frames larger than --max-pixels; 0 never tiles.")
@click.option("--max-pixels", type=click.IntRange(1), default=Tiling.max_pixels, show_default=True,
              help="Frames up to this many pixels run whole.")
@click.option("--op-impl", type=click.Choice(OP_IMPLS), default="auto", show_default=True,
              help="Local-convolution implementation: auto (compiled kernel, else PyTorch), compiled (or fail), torch.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def interpolate(
    source: Path, output: Path | None, model: str, weights: Path | None, device: str, precision: str,
    factor: str, codec: str, crf: int, preset: str, lossless: bool, scene_threshold: float,
    batch_size: int, tile: int, max_pixels: int, op_impl: str, overwrite: bool, quiet: bool,
) -> None:
    """Write SOURCE at 2x (or --factor 4, 8) its frame rate, audio and duration kept."""
    started = time.perf_counter()
    silence_info(quiet)
    output = output or default_output(source, int(factor), lossless)
    # Fail on a typo in a path before spending seconds loading a network.
    check_paths(source, output, overwrite)
    probe(source)
    network = load_weights(weights or default_weights(model), model=model)
    interpolator = Interpolator(
        network, device=device, precision=precision, op_impl=op_impl,
        tiling=Tiling(tile=tile, context=Tiling.context, max_pixels=max_pixels),
    )
    options = VideoOptions(
        factor=int(factor), codec=codec, crf=crf, preset=preset, lossless=lossless,
        overwrite=overwrite, scene_threshold=scene_threshold, batch_size=batch_size,
    )
    with frame_progress(enabled=not quiet and sys.stderr.isatty(), description=f"{source.name} → {output.name}") as progress:
        report = interpolate_video(source, output, interpolator.midpoint, options=options, progress=progress)
    if not quiet:
        click.echo(f"{report.summary()} on {interpolator.device} ({time.perf_counter() - started:.1f} s in all)", err=True)
