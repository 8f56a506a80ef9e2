"""Is ``interpolate_video``'s peak memory flat in the video's length? (issue 8: within 10 %)

    python benchmarks/rss_flat.py                               # 60 vs 600 frames, 64×64, full SepConv
    python benchmarks/rss_flat.py --lengths 60,600,1200 --size 128x96 --json rss.json

Renders one synthetic pan with audio (``tests/media.make_video``) per length, then
interpolates each in a fresh Python process, so one run's memory cannot hide another's.
The child loads the network (random init unless ``--weights``), runs one warm-up
``midpoint`` at the clip's size, notes its resident memory (the baseline), resets the
kernel's high-water mark (``/proc/self/clear_refs``; Linux) and runs ``interpolate_video``.
Reported per length: the baseline, the peak RSS during interpolation (``VmHWM``), its
growth over the baseline, and the process's lifetime peak (``ru_maxrss``).

Exits 1 when the longest video's peak exceeds the shortest's by more than ``--tolerance``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.media

from sepconv_cli.commands.train import parse_model_config
from sepconv_cli.engine import Interpolator
from sepconv_cli.models.registry import MODELS, build_model, load_weights
from sepconv_cli.pipeline import VideoOptions, interpolate_video
from sepconv_cli.video import probe
from tests.media import make_video


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def child(clip: Path, model: str, weights: Path | None, model_config: tuple[str, ...], device: str) -> dict:
    """Interpolate ``clip`` in this process and return its memory figures (MB)."""
    torch.manual_seed(0)
    network = load_weights(weights, model=model) if weights else build_model(model, parse_model_config(model_config))
    interpolator = Interpolator(network, device=device)
    info = probe(clip)
    frame = torch.rand(1, 3, info.height, info.width)
    interpolator.midpoint(frame, frame)  # warm-up: the allocator's pools and oneDNN's primitives
    del frame
    baseline = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = interpolate_video(clip, Path(tmp) / "out.mp4", interpolator.midpoint, options=VideoOptions())
    return {
        "frames": report.input_frames,
        "seconds": time.perf_counter() - start,
        "baseline_mb": baseline,
        "peak_mb": _status_mb("VmHWM"),
        "growth_mb": _status_mb("VmHWM") - baseline,
        "lifetime_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lengths", default="60,600", show_default=True, help="Frame counts, comma-separated, shortest first.")
@click.option("--size", default="64x64", show_default=True, help="WIDTHxHEIGHT of the synthetic clips.")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="sepconv", show_default=True)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-config", multiple=True, metavar="KEY=VALUE|JSON", help="Network size for random init.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--tolerance", type=float, default=0.10, show_default=True, help="Allowed relative growth of the peak.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--child", "child_clip", type=click.Path(path_type=Path), hidden=True)
def main(
    lengths: str, size: str, model: str, weights: Path | None, model_config: tuple[str, ...], device: str,
    tolerance: float, json_path: Path | None, child_clip: Path | None,
) -> None:
    """Peak RSS of interpolate_video on a short and a long clip (see the module docstring)."""
    if child_clip is not None:
        click.echo(json.dumps(child(child_clip, model, weights, model_config, device)))
        return
    if not os.path.exists("/proc/self/clear_refs"):
        raise click.ClickException("this measurement needs Linux's /proc/self/clear_refs")
    width, _, height = size.partition("x")
    counts = [int(n) for n in lengths.split(",")]
    passthrough = ["--model", model, "--device", device, *(["--weights", str(weights)] if weights else [])]
    for item in model_config:
        passthrough += ["--model-config", item]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sepconv-rss-") as tmp:
        for count in counts:
            clip = make_video(Path(tmp) / f"{count}.mp4", width=int(width), height=int(height), frames=count, audio=True)
            click.echo(f"{count} frames …", err=True)
            done = subprocess.run([sys.executable, __file__, "--child", str(clip), *passthrough],
                                  check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, last = rows[0], rows[-1]
    ratio = last["peak_mb"] / first["peak_mb"]
    met = ratio <= 1 + tolerance
    click.echo(f"{model} at {size}, {torch.__version__}, {os.cpu_count()} cores\n")
    click.echo("| frames | time s | baseline MB | peak RSS MB | growth MB | process peak MB |")
    click.echo("|---|---|---|---|---|---|")
    for row in rows:
        click.echo(f"| {row['frames']} | {row['seconds']:.1f} | {row['baseline_mb']:.0f} | {row['peak_mb']:.0f} "
                   f"| {row['growth_mb']:.1f} | {row['lifetime_peak_mb']:.0f} |")
    click.echo(f"\n{last['frames']} vs {first['frames']} frames: peak ×{ratio:.3f} "
               f"({'met' if met else 'NOT met'}: goal ≤ ×{1 + tolerance:.2f})")
    if json_path is not None:
        json_path.write_text(json.dumps({"size": size, "model": model, "runs": rows, "ratio": ratio, "met": met}, indent=2) + "\n")
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
