"""The next pair's DIS computed beside this pair's network (``Interpolator.prefetch``), off and on.

    python benchmarks/flow_prefetch.py                          # 720p, shipped weights, 3 rounds
    python benchmarks/flow_prefetch.py --frames 9 --rounds 5 --clip city720.mp4

Each round streams the same clip through ``pipeline.interpolate_video`` (decode → cut check →
engine → libx264 crf 18, preset medium, as ``bench.py``'s end to end) twice, once with
``flow_prefetch=False`` and once with it on, in alternating order, one process, a fresh
``Interpolator`` each time (an empty flow memo) over the same loaded weights. The figure is
the median interval between the pipeline's progress calls (one per frame pair; the first
pair, which warms up, is left out) over all rounds; the ratio of the two medians is the one
to read on a shared machine, since both are slowed alike. The digests of every frame the
engine returned must be equal: the prefetch may change when a flow is computed, never what
comes out. The default clip is the synthetic 720p pan (``tests/media.make_video``).
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sepconv_cli.engine import Interpolator  # noqa: E402
from sepconv_cli.models.registry import default_weights, load_weights  # noqa: E402
from sepconv_cli.pipeline import VideoOptions, interpolate_video  # noqa: E402
from tests.media import make_video  # noqa: E402


class Digesting(Interpolator):
    """An interpolator that hashes every frame ``at`` returns (``midpoint`` goes through it)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.digest = hashlib.blake2b(digest_size=16)

    def at(self, *args: object, **kwargs: object) -> torch.Tensor:  # type: ignore[override]
        output = super().at(*args, **kwargs)  # type: ignore[arg-type]
        self.digest.update(output.numpy().tobytes())
        return output


def stream(model: torch.nn.Module, clip: Path, out: Path, prefetch: bool) -> tuple[list[float], str]:
    """Per-pair seconds (the first left out) and the digest of the new frames, for one run."""
    interpolator = Digesting(model, device="cpu", flow_prefetch=prefetch)
    marks: list[float] = []
    start = time.perf_counter()
    try:
        report = interpolate_video(clip, out, interpolator.midpoint, options=VideoOptions(overwrite=True),
                                   progress=lambda done, total: marks.append(time.perf_counter()))
    finally:
        interpolator.close()
    pairs = report.input_frames - 1  # the last progress call is the unpaired last frame
    intervals = [b - a for a, b in zip([start, *marks], marks)][:pairs]
    return intervals[1:], interpolator.digest.hexdigest()


@click.command()
@click.option("--frames", type=click.IntRange(3), default=7, show_default=True, help="synthetic clip length")
@click.option("--size", default="1280x720", show_default=True, help="WIDTHxHEIGHT of the synthetic clip")
@click.option("--clip", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="a video instead")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="[default: the shipped flowsep weights]")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(1), help="torch threads [default: torch's]")
def main(frames: int, size: str, clip: Path | None, weights: Path | None, rounds: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    model = load_weights(weights or default_weights("flowsep"))
    times: dict[bool, list[float]] = {False: [], True: []}
    digests: dict[bool, set[str]] = {False: set(), True: set()}
    with tempfile.TemporaryDirectory() as folder:
        if clip is None:
            width, height = (int(v) for v in size.lower().split("x"))
            clip = make_video(Path(folder) / "in.mp4", frames=frames, width=width, height=height, audio=False)
        for round_ in range(rounds):
            for prefetch in (False, True) if round_ % 2 == 0 else (True, False):
                intervals, digest = stream(model, clip, Path(folder) / "out.mp4", prefetch)
                times[prefetch] += intervals
                digests[prefetch].add(digest)
                click.echo(f"round {round_ + 1} prefetch {'on ' if prefetch else 'off'}: "
                           f"{', '.join(f'{t:.3f}' for t in intervals)} s/pair", err=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    same = len(digests[False] | digests[True]) == 1
    click.echo("| prefetch | e2e s/frame (median, n) | ratio off/on | outputs identical |")
    click.echo("|---|---|---|---|")
    click.echo(f"| off | {off:.3f} ({len(times[False])}) | | |")
    click.echo(f"| on | {on:.3f} ({len(times[True])}) | {off / on:.2f}x | {'yes' if same else 'NO'} |")
    if not same:
        raise SystemExit("the outputs with and without the prefetch differ")


if __name__ == "__main__":
    main()
