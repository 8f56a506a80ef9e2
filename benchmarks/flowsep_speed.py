"""FlowSep on the CPU before and after the fused kernels, alternating in one process.

    python benchmarks/flowsep_speed.py --sizes 720p,1080p --repeats 3

"before" runs the code paths the model had before the fused synthesis and the compiled
splat (``reference_synthesis()`` and ``flow.splat_reference``, the PyTorch compositions
that stay as the kernels' references); "after" the default ones. Each repeat runs both on
the same two frames, one after the other, so a machine shared with other jobs slows both
alike: the ratio of the medians is the figure to read, absolute times drift with the load.
Both wall time and this process's CPU time (which waiting for a busy core does not inflate)
are reported. The flow prior (DIS) is computed once outside the timed calls, as the engine
does per pair, so this times the model: prior warps, splat, U-Net and synthesis.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator

import click
import torch

from sepconv_cli.ext.flowsep_synthesis import reference_synthesis
from sepconv_cli.flow import flow_prior, splat_reference
from sepconv_cli.models import flowsep as flowsep_module
from sepconv_cli.models.registry import default_weights, load_weights

SIZES = {"480p": (480, 848), "720p": (720, 1280), "1080p": (1088, 1920)}


def frames(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth colour pattern and the same moved by ~12 px: content DIS can track."""
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)

    def frame(shift: float) -> torch.Tensor:
        x = xs + shift
        return torch.stack([
            0.5 + 0.5 * torch.sin(20 * x + 7 * ys), 0.5 + 0.5 * torch.cos(13 * ys + 9 * x * x), (x + ys) % 1,
        ]).unsqueeze(0)

    return frame(0.0), frame(0.01)


@contextlib.contextmanager
def before() -> Iterator[None]:
    """The model's code paths before the fused kernels."""
    original = flowsep_module.splat
    flowsep_module.splat = splat_reference
    try:
        with reference_synthesis():
            yield
    finally:
        flowsep_module.splat = original


@click.command()
@click.option("--sizes", default="720p,1080p", show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(1), help="torch threads [default: torch's]")
def main(sizes: str, repeats: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    model = load_weights(default_weights("flowsep")).eval()
    model.to(memory_format=torch.channels_last)  # as the engine runs it on the CPU
    click.echo("| size | before wall s | after wall s | wall ratio | before CPU s | after CPU s | CPU ratio | max diff |")
    click.echo("|---|---|---|---|---|---|---|---|")
    for name in sizes.split(","):
        height, width = SIZES[name]
        a, b = frames(height, width)
        flows = flow_prior(a, b)
        times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        outputs = {}
        with torch.inference_mode():
            for repeat in range(repeats + 1):  # the first round warms up
                for label in ("before", "after"):
                    context = before() if label == "before" else contextlib.nullcontext()
                    with context:
                        wall, cpu = time.perf_counter(), time.process_time()
                        outputs[label] = model(a, b, None, t=0.5, flows=flows)
                        if repeat:
                            times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        diff = float((outputs["before"].clamp(0, 1) - outputs["after"].clamp(0, 1)).abs().max())
        click.echo(
            f"| {name} | {med['before'][0]:.2f} | {med['after'][0]:.2f} | {med['before'][0] / med['after'][0]:.2f}x "
            f"| {med['before'][1]:.2f} | {med['after'][1]:.2f} | {med['before'][1] / med['after'][1]:.2f}x | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
