"""Training steps/s of flowsep on the CPU, before and after the fused kernels, in one process.

    python benchmarks/train_speed.py --batch 8 --crop 128 --steps 5

One step is what ``sepconv train --model flowsep`` does per batch: the model's forward on
``batch`` triplets of ``crop``² (DIS flow both ways per pair inside, as in training, at
random t), an L1 loss against the middle frame, backward, and an Adamax step. The crops
are cut from a real photograph (scikit-image's astronaut) and moved by a few pixels, so
DIS sees trackable texture. "before" runs the PyTorch compositions the model had before
(``reference_synthesis()`` and ``flow.splat_reference``), "after" the defaults; the two
alternate step by step on copies of the same network, so a shared machine's load slows
both alike: read the ratio. Prints a Markdown row.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time

import click
import numpy as np
import torch
from torch.nn import functional as F

from benchmarks.flowsep_speed import before
from sepconv_cli.models.registry import build_model, default_weights, load_weights


def triplets(batch: int, crop: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from skimage import data

    photo = torch.from_numpy(np.ascontiguousarray(data.astronaut())).permute(2, 0, 1).float().div(255)
    rng = np.random.default_rng(seed)
    frames: list[list[torch.Tensor]] = [[], [], []]
    for _ in range(batch):
        top, left = (int(v) for v in rng.integers(8, 512 - crop - 8, size=2))
        dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
        for k in range(3):
            frames[k].append(photo[:, top + k * dy : top + k * dy + crop, left + k * dx : left + k * dx + crop])
    return tuple(torch.stack(f) for f in frames)  # type: ignore[return-value]


@click.command()
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--crop", type=click.IntRange(16), default=128, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=5, show_default=True, help="Timed steps per variant.")
@click.option("--random-init", is_flag=True, help="Train from random weights instead of the shipped ones.")
def main(batch: int, crop: int, steps: int, random_init: bool) -> None:
    base = build_model("flowsep") if random_init else load_weights(default_weights("flowsep"))
    models = {"before": copy.deepcopy(base).train(), "after": copy.deepcopy(base).train()}
    optimisers = {k: torch.optim.Adamax(m.parameters(), lr=1e-4) for k, m in models.items()}
    frame1, middle, frame2 = triplets(batch, crop)
    times = torch.rand(batch, generator=torch.Generator().manual_seed(1)) * 0.7 + 0.15
    seconds: dict[str, list[float]] = {"before": [], "after": []}
    for step in range(steps + 1):  # the first round warms up
        for label in ("before", "after"):
            context = before() if label == "before" else contextlib.nullcontext()
            with context:
                start = time.perf_counter()
                prediction = models[label](frame1, frame2, t=times)
                loss = F.l1_loss(prediction, middle)
                optimisers[label].zero_grad(set_to_none=True)
                loss.backward()
                optimisers[label].step()
                if step:
                    seconds[label].append(time.perf_counter() - start)
    rate = {k: 1 / statistics.median(v) for k, v in seconds.items()}
    click.echo("| batch × crop | before steps/s | after steps/s | speed-up |")
    click.echo("|---|---|---|---|")
    click.echo(f"| {batch} × {crop}² | {rate['before']:.3f} | {rate['after']:.3f} | {rate['after'] / rate['before']:.2f}x |")


if __name__ == "__main__":
    main()
