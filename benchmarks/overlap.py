"""How much of the pipeline's own work (decode, cut check, encode) the background threads hide.

    python benchmarks/overlap.py                     # this checkout
    python benchmarks/overlap.py --network-ms 7      # a faster stand-in network

The network is replaced by a plain average plus a sleep of ``--network-ms`` per frame pair:
the sleep leaves the CPU free, as a GPU computing the real network would, so the run shows
what the CPU side of the pipeline costs when it overlaps with the network and what it
would cost run in series (the sum of the two). Prints the median of ``--runs`` runs on a
synthetic 720p pan with audio (``tests/media.make_video``), encoded with libx264 crf 18,
preset medium.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sepconv_cli.pipeline import VideoOptions, interpolate_video  # noqa: E402
from tests.media import make_video  # noqa: E402


@click.command()
@click.option("--frames", type=click.IntRange(2), default=61, show_default=True)
@click.option("--size", default="1280x720", show_default=True, help="WIDTHxHEIGHT")
@click.option("--network-ms", type=float, default=50.0, show_default=True, help="stand-in network time per pair")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--preset", default="medium", show_default=True)
def main(frames: int, size: str, network_ms: float, runs: int, preset: str) -> None:
    width, height = (int(v) for v in size.lower().split("x"))

    def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        time.sleep(network_ms / 1000)
        return (a + b) / 2

    with tempfile.TemporaryDirectory() as folder:
        src = make_video(Path(folder) / "in.mp4", frames=frames, width=width, height=height, audio=True)
        times = []
        for run in range(runs):
            started = time.perf_counter()
            interpolate_video(src, Path(folder) / f"out{run}.mp4", midpoint, options=VideoOptions(preset=preset))
            times.append(time.perf_counter() - started)
    pairs = frames - 1
    network = pairs * network_ms / 1000
    median = statistics.median(times)
    click.echo(
        f"{frames} frames {width}x{height}, preset {preset}: {median:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}); "
        f"stand-in network {network:.2f} s; pipeline beyond it {median - network:.2f} s; "
        f"{2 * pairs / median:.1f} output frames/s"
    )


if __name__ == "__main__":
    main()
