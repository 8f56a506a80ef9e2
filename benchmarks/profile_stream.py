"""Where the 720p stream's time goes: cProfile and torch.profiler over ``interpolate_video``.

    python benchmarks/profile_stream.py                        # 7-frame 720p pan, one thread, cProfile
    python benchmarks/profile_stream.py --torch                # ops by call site, shapes recorded
    python benchmarks/profile_stream.py --no-prefetch --frames 9 --threads 2

The synthetic pan of ``benchmarks/flow_prefetch.py`` (``tests.media.make_video``) goes through
``pipeline.interpolate_video`` with the shipped weights, as ``bench.py``'s end to end does;
a 3-frame run first builds the kernels and warms up. cProfile sees the calling thread only:
with the prefetch on, most DIS calls run in the background thread and appear as waits
(``acquire``) where the caller needs a flow not yet done; ``--no-prefetch`` puts them back.
``--torch`` attributes each ATen op's self time to the innermost ``sepconv_cli`` functions
above it (torch.profiler, with stacks and input shapes), which tells apart, say, the
U-Net's ``cat`` from the one ``torch.stack`` makes. On a shared machine only the shares mean
anything.
"""

from __future__ import annotations

import cProfile
import collections
import pstats
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


def _site(event: object, depth: int = 2) -> str:
    """The innermost ``depth`` sepconv_cli Python frames above a profiler event."""
    chain = []
    parent = getattr(event, "cpu_parent", None)
    while parent is not None and len(chain) < depth:
        if "sepconv_cli/" in parent.name and ".py(" in parent.name:
            chain.append(parent.name.split("sepconv_cli/")[-1])
        parent = parent.cpu_parent
    return " < ".join(chain)


def _by_site(profile: torch.profiler.profile, rows: int) -> None:
    events = profile.events()
    total = sum(e.self_cpu_time_total for e in events)
    sites: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for event in events:
        if not event.name.startswith(("aten::", "sepconv", "<built-in")):
            continue
        parent = event.cpu_parent.name if event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::") else ""
        key = (event.name + (f" [{parent}]" if parent else ""), _site(event), str(event.input_shapes)[:60])
        sites[key][0] += event.self_cpu_time_total
        sites[key][1] += 1
    click.echo(f"self CPU total {total / 1e6:.2f} s")
    click.echo("| share | self s | calls | op [caller op] | call site | input shapes |")
    click.echo("|---|---|---|---|---|---|")
    for (name, site, shapes), (self_us, calls) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:rows]:
        click.echo(f"| {100 * self_us / total:.1f} % | {self_us / 1e6:.3f} | {calls} | {name} | {site} | {shapes} |")


@click.command()
@click.option("--frames", type=click.IntRange(3), default=7, show_default=True, help="synthetic clip length")
@click.option("--size", default="1280x720", show_default=True, help="WIDTHxHEIGHT")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="torch threads")
@click.option("--prefetch/--no-prefetch", default=True, show_default=True, help="DIS of the next pair ahead")
@click.option("--torch", "use_torch", is_flag=True, help="torch.profiler by call site instead of cProfile")
@click.option("--rows", type=click.IntRange(1), default=30, show_default=True)
def main(frames: int, size: str, threads: int, prefetch: bool, use_torch: bool, rows: int) -> None:
    torch.set_num_threads(threads)
    model = load_weights(default_weights("flowsep"))
    width, height = (int(v) for v in size.lower().split("x"))
    with tempfile.TemporaryDirectory() as folder:
        clip = make_video(Path(folder) / "in.mp4", frames=frames, width=width, height=height, audio=False)
        warm = make_video(Path(folder) / "warm.mp4", frames=3, width=width, height=height, audio=False)

        def run(source: Path) -> None:
            interpolator = Interpolator(model, device="cpu", flow_prefetch=prefetch)
            try:
                interpolate_video(source, Path(folder) / "out.mp4", interpolator.midpoint,
                                  options=VideoOptions(overwrite=True))
            finally:
                interpolator.close()

        run(warm)
        start = time.perf_counter()
        if use_torch:
            activities = [torch.profiler.ProfilerActivity.CPU]
            with torch.profiler.profile(activities=activities, record_shapes=True, with_stack=True) as profile:
                run(clip)
            click.echo(f"{frames - 1} pairs, {threads} thread(s), prefetch {'on' if prefetch else 'off'}, "
                       f"{time.perf_counter() - start:.2f} s under the profiler")
            _by_site(profile, rows)
            return
        profiler = cProfile.Profile()
        profiler.runcall(run, clip)
        wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    click.echo(f"{frames - 1} pairs, {threads} thread(s), prefetch {'on' if prefetch else 'off'}, {wall:.2f} s")
    click.echo("| share | self s | calls | function |")
    click.echo("|---|---|---|---|")
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:rows]  # type: ignore[attr-defined]
    for (file, line, function), (_, calls, self_s, _, _) in entries:
        where = function if file == "~" else f"{Path(file).name}:{line}({function})"
        click.echo(f"| {100 * self_s / wall:.1f} % | {self_s:.3f} | {calls} | {where} |")


if __name__ == "__main__":
    main()
