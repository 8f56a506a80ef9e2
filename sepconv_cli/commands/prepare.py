"""``sepconv prepare``: fill the training patch cache from footage or synthetic scenes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from sepconv_cli.commands.progress import frame_progress
from sepconv_cli.data.cache import default_cache_dir
from sepconv_cli.data.prepare import PrepareSummary, SelectionParams, prepare_frames, prepare_synthetic
from sepconv_cli.errors import Interrupted

MAX_NOTES = 8


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@click.command()
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False),
              help="Cache folder [default: $SEPCONV_CACHE, else ./cache/patches]; 'sepconv train' reads the same default.")
@click.option("--patches", type=click.IntRange(1), default=20, show_default=True, help="Most patches kept per triplet.")
@click.option("--size", type=click.IntRange(8), default=150, show_default=True, help="Patch side in pixels.")
@click.option("--stride", type=click.IntRange(1), default=1, show_default=True,
              help="Frame distance inside a triplet (frames i, i+stride, i+2*stride).")
@click.option("--workers", type=click.IntRange(1), default=_default_workers, show_default="CPU cores, at most 8",
              help="Worker processes (footage) or CPU threads (synthetic); the result does not depend on it.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice; same seed, same bytes.")
@click.option("--synthetic", "photos", type=click.Path(path_type=Path, file_okay=False),
              help="Render procedural scenes from the photographs in this folder instead of reading SOURCE.")
@click.option("--count", type=click.IntRange(1), help="Number of synthetic triplets (with --synthetic).")
@click.option("--device", default="auto", show_default=True, help="Where synthetic scenes render: auto, cpu, cuda, cuda:N.")
@click.option("--triplets", is_flag=True,
              help="Write a version-1 cache of triplets only, without the neighbour frames "
                   "(i-stride, i+3*stride) of the default five-frame windows; also to finish an interrupted version-1 run.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def prepare(
    source: Path | None, out: Path | None, patches: int, size: int, stride: int, workers: int, seed: int,
    photos: Path | None, count: int | None, device: str, triplets: bool, quiet: bool,
) -> None:
    """Extract training triplets from SOURCE into the patch cache.

    SOURCE is a DAVIS folder (JPEGImages/480p/<sequence>/), a folder of image
    sequences, a video, or a folder of videos. Patches are kept with a probability
    that grows with their SimpleFlow motion; triplets across shot cuts and static
    windows are rejected. Each patch also keeps the frames one stride before and after
    its triplet (flagged where missing or across a cut), for models that use them.
    Run the same command again to resume an interrupted run.
    With --synthetic PHOTOS --count N, scenes with known motion are rendered instead.
    """
    if (source is None) == (photos is None):
        raise click.UsageError("give either SOURCE or --synthetic PHOTOS_DIR (not both)")
    if photos is not None and count is None:
        raise click.UsageError("--synthetic needs --count N")
    if photos is None and count is not None:
        raise click.UsageError("--count goes with --synthetic")
    out = out or default_cache_dir()
    started = time.perf_counter()
    what = f"{photos.name} (synthetic)" if photos is not None else (source.name or str(source))
    try:
        with frame_progress(enabled=not quiet and sys.stderr.isatty(), description=f"{what} → {out}",
                            unit="triplets") as progress:
            if photos is not None:
                from sepconv_cli.data.synthetic import SceneConfig

                summary = prepare_synthetic(
                    photos, out, count, seed=seed, config=SceneConfig(size=size),
                    device=None if device == "auto" else device, workers=workers, progress=progress,
                    windows=not triplets,
                )
            else:
                params = SelectionParams(size=size, patches=patches, stride=stride, seed=seed, windows=not triplets)
                summary = prepare_frames(source, out, params, workers=workers, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; finished shards are kept in {out}: run the same command again to resume") from None
    if not quiet:
        click.echo(format_summary(summary, time.perf_counter() - started), err=True)


def format_summary(summary: PrepareSummary, seconds: float) -> str:
    """The end-of-run report: what was kept, rejected and skipped."""
    c = summary.counts
    lines = []
    if "scenes" in c:
        windows = " with neighbour frames" if summary.version >= 2 else ""
        lines.append(f"{summary.out}: {c['patches']} synthetic triplets{windows} from {c.get('photos', 0)} photo crops "
                     f"({seconds:.1f} s)")
    else:
        lines.append(
            f"{summary.out}: {c.get('patches', 0)} patches kept from {c.get('triplets', 0)} triplets of "
            f"{c.get('sequences', 0)} sequence(s) ({seconds:.1f} s)"
        )
        lines.append(
            f"  rejected: {c.get('cuts', 0)} triplet(s) across a shot cut, {c.get('static_windows', 0)} static "
            f"window(s) of {c.get('windows', 0)} tried"
            + (f", {c['no_flow_windows']} without a usable flow" if c.get("no_flow_windows") else "")
        )
        if "patches_without_neighbours" in c:
            lines.append(
                f"  neighbour frames: {c['patches'] - c['patches_without_neighbours']} of {c['patches']} patch(es) "
                f"have both; the rest sit at a sequence's end or beside a cut ({c.get('neighbour_cuts', 0)} triplet(s))"
            )
        skipped = [
            (c.get("short_sequences", 0), "sequence(s) too short"),
            (c.get("unreadable_images", 0), "unreadable image(s)"),
            (c.get("unreadable_videos", 0), "undecodable video(s)"),
            (c.get("mixed_size_triplets", 0), "triplet(s) with mixed frame sizes"),
            (c.get("small_triplets", 0), "triplet(s) smaller than a patch"),
        ]
        if any(n for n, _ in skipped):
            lines.append("  skipped: " + ", ".join(f"{n} {what}" for n, what in skipped if n))
        if summary.histogram_png is not None:
            lines.append(f"  flow histogram: {summary.histogram_png}")
    if summary.units_done_before and not summary.units_done_now:
        lines.append("  already complete: nothing to do (delete the folder or choose another --out to start over)")
    elif summary.units_done_before:
        lines.append(f"  resumed: {summary.units_done_before} shard(s) were already done")
    for note in summary.problems[:MAX_NOTES]:
        lines.append(f"  note: {note}")
    if len(summary.problems) > MAX_NOTES:
        lines.append(f"  note: ... and {len(summary.problems) - MAX_NOTES} more (see index.json)")
    return "\n".join(lines)
