"""How long ``sepconv eval`` spends scoring one frame: the float64 PyTorch SSIM it used
before against ``metrics.frame_ssim`` (float32, OpenCV), and PSNR likewise.

    python benchmarks/metrics_speed.py                    # 1024x576, 7 rounds
    python benchmarks/metrics_speed.py --size 720x576 --runs 11
    python benchmarks/metrics_speed.py --threads 1        # one thread each for torch and OpenCV

Each round times every implementation once on the same pair, old and new alternating so
that a noisy neighbour slows both alike; the medians are printed with the speed-up, the
largest difference between the old and new values, and what SSIM alone costs for a
795-frame clip (397 predicted frames) scored for 4 methods. The pair is a frame of the
textured pan of ``tests/media.py`` against a noisy copy of it (values do not change the
time of either implementation).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sepconv_cli.metrics import frame_psnr, frame_ssim, psnr, ssim  # noqa: E402
from tests.media import texture  # noqa: E402


# --- the implementations ``eval`` used before: float64 PyTorch, still in metrics.py (training uses them)


def old_frame(metric: Callable[..., torch.Tensor]) -> Callable[[np.ndarray, np.ndarray], float]:
    """The old per-frame path of ``evaluation.score``: (H, W, 3) uint8 → (1, 3, H, W) tensors."""

    def run(prediction: np.ndarray, truth: np.ndarray) -> float:
        p = torch.from_numpy(np.ascontiguousarray(prediction)).permute(2, 0, 1)[None]
        t = torch.from_numpy(np.ascontiguousarray(truth)).permute(2, 0, 1)[None]
        return float(metric(p, t, data_range=255))

    return run


# --- timing ----------------------------------------------------------------------------------------


def clock(function: Callable[[], float]) -> tuple[float, float]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


@click.command()
@click.option("--size", default="1024x576", show_default=True, help="WIDTHxHEIGHT of the frame pair")
@click.option("--runs", type=click.IntRange(1), default=7, show_default=True, help="timed rounds")
@click.option("--threads", type=click.IntRange(1), help="torch and OpenCV threads [default: theirs]")
def main(size: str, runs: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    width, height = (int(v) for v in size.lower().split("x"))
    truth = texture(4, width, height)
    noise = np.random.default_rng(0).integers(-12, 13, truth.shape)
    prediction = np.clip(truth.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    contenders: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "SSIM old (torch float64 conv2d)": old_frame(ssim),
        "SSIM new (frame_ssim, OpenCV float32)": frame_ssim,
        "PSNR old (torch float64)": old_frame(psnr),
        "PSNR new (frame_psnr, cv2.norm)": frame_psnr,
    }
    for function in contenders.values():  # warm-up: first-call allocations, OpenCV's thread pool
        function(prediction, truth)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    values: dict[str, float] = {}
    for _ in range(runs):
        for name, function in contenders.items():
            seconds, values[name] = clock(lambda f=function: f(prediction, truth))
            times[name].append(seconds)
    median = {name: statistics.median(ts) for name, ts in times.items()}

    click.echo(f"{width}x{height} RGB uint8 pair, median of {runs} rounds; {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
               f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), load average "
               f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name, seconds in median.items():
        spread = ", ".join(f"{1000 * t:.1f}" for t in times[name])
        click.echo(f"  {name:40s} {1000 * seconds:8.1f} ms/frame   (rounds: {spread})   value {values[name]:.10f}")
    ssim_old, ssim_new = (median[n] for n in list(median)[:2])
    psnr_old, psnr_new = (median[n] for n in list(median)[2:])
    ssim_values, psnr_values = list(values.values())[:2], list(values.values())[2:]
    click.echo(f"  SSIM speed-up {ssim_old / ssim_new:.1f}x, |new - old| = {abs(ssim_values[1] - ssim_values[0]):.1e}")
    click.echo(f"  PSNR speed-up {psnr_old / psnr_new:.1f}x, |new - old| = {abs(psnr_values[1] - psnr_values[0]):.1e}")
    click.echo(f"  score() per frame: {1000 * (ssim_old + psnr_old):.1f} ms before, {1000 * (ssim_new + psnr_new):.1f} ms now, "
               f"{(ssim_old + psnr_old) / (ssim_new + psnr_new):.1f}x")
    scored = 397 * 4  # a 795-frame clip: every odd frame predicted, 4 methods
    click.echo(f"  SSIM for a 795-frame clip, 4 methods ({scored} scores): {ssim_old * scored / 60:.1f} min before, "
               f"{ssim_new * scored / 60:.1f} min now")


if __name__ == "__main__":
    main()
