"""``sepconv train``: train SepConv or DSepConv on the patch cache (or procedural scenes)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from sepconv_cli.errors import InputError
from sepconv_cli.models.registry import MODELS
from sepconv_cli.training import PRECISIONS, RESUMABLE, TrainConfig, TrainProgress, load_run_config
from sepconv_cli.training import train as run_training

# Command-line parameter → TrainConfig field, where the names differ.
FIELDS = {"loss": "losses", "lr_decay_every": "lr_decay_epochs"}


def parse_model_config(items: tuple[str, ...]) -> dict[str, Any]:
    """``'{"kernel_size": 5}'`` and/or ``kernel_size=5 channels=[4,4,8,8,8]`` → dict (values read as JSON)."""
    config: dict[str, Any] = {}
    for item in items:
        text = item.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise click.BadParameter(f"not a JSON object: {exc}", param_hint="--model-config") from None
            if not isinstance(value, dict):
                raise click.BadParameter("expected a JSON object", param_hint="--model-config")
            config.update(value)
            continue
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{item}' is neither KEY=VALUE nor a JSON object", param_hint="--model-config")
        try:
            config[key.strip()] = json.loads(raw)
        except ValueError:
            config[key.strip()] = raw.strip()
    return config


@contextmanager
def training_display(enabled: bool, quiet: bool) -> Iterator[tuple[Callable[[TrainProgress], None], Callable[[str], None]]]:
    """``(progress, note)`` callbacks: a rich bar with loss and samples/s, and one-line messages."""
    def echo(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    if not enabled or quiet:
        yield (lambda p: None), echo
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4g}"), TextColumn("{task.fields[rate]:.1f} samples/s"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("train", total=None, epoch=1, loss=float("nan"), rate=0.0)

        def progress(p: TrainProgress) -> None:
            bar.update(task, completed=p.step, total=p.total_steps, epoch=p.epoch + 1, loss=p.loss, rate=p.samples_per_s)

        yield progress, lambda text: bar.console.print(text, markup=False, highlight=False)


def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _decay(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # Not a FloatRange: that lets NaN through, and its "0<=x<1" does not say what 1 would mean.
    if not 0 <= value < 1:
        raise click.BadParameter(f"{value:g} is not a decay in [0, 1) (0 turns the average off; 1 would never move)")
    return value


@click.command()
@click.option("--data", type=click.Path(path_type=Path, file_okay=False),
              help="Patch cache from 'sepconv prepare' [default: $SEPCONV_CACHE, else ./cache/patches].")
@click.option("--synthetic", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of photographs: render procedural scenes on the fly instead of reading a cache.")
@click.option("--scenes-per-epoch", type=click.IntRange(1), default=16384, show_default=True, help="With --synthetic.")
@click.option("--val-scenes", type=click.IntRange(0), default=64, show_default=True, help="Fixed validation scenes (with --synthetic).")
@click.option("--val-data", type=click.Path(path_type=Path, file_okay=False),
              help="Patch cache of held-out footage to validate on and keep the best checkpoint by.")
@click.option("--scene-size", type=click.IntRange(32), default=150, show_default=True, help="Side of procedural scenes (px).")
@click.option("--max-motion", type=click.FloatRange(0), default=40.0, show_default=True,
              help="Largest motion in procedural scenes (px between the two input frames).")
@click.option("--h264", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of procedural scenes that go through a libx264 round trip.")
@click.option("--clean-target", is_flag=True,
              help="Degrade only the input frames of procedural scenes, not the frame to predict.")
@click.option("--static-fraction", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Share of procedural scenes without motion.")
@click.option("--elastic", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of procedural scenes that also deform non-rigidly (foliage, water), "
                   "oscillating in time so linear motion misses the middle frame.")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="sepconv", show_default=True,
              help="Network to train: flowsep (interpolate's default, any time t, CPU-sized), sepconv or dsepconv "
                   "(midpoints only).")
@click.option("--model-config", multiple=True, metavar="KEY=VALUE|JSON",
              help='Override the model\'s defaults, e.g. kernel_size=5 channels=[4,4,8,8,8] (repeatable).')
@click.option("--loss", multiple=True, metavar="NAME[:WEIGHT]",
              help="l1, l2, charbonnier, ssim, vgg, gradient, flip-charbonnier, dsepconv; repeat or join with + "
                   "(e.g. --loss l1 --loss vgg:1e-5). [default: l1 for sepconv and flowsep, dsepconv for dsepconv]")
@click.option("--vgg-weights", type=click.Path(path_type=Path, dir_okay=False),
              help="torchvision VGG-19 state dict (vgg19-dcbb9e9d.pth) for the vgg loss.")
@click.option("--init", type=click.Path(path_type=Path, dir_okay=False), help="Start from these weights (fine-tuning).")
@click.option("--validate-init", is_flag=True,
              help="Score the --init weights on the validation data before training, so they compete for best.pt.")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False),
              help="Run folder [default: ./runs/<model>-<timestamp>].")
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False),
              help="Continue the run in this folder exactly where its last checkpoint left it.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
              help="Global batch (split among torchrun processes).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adamax", "adam"]), default="adamax", show_default=True,
              help="AdaMax (the SepConv paper's) or Adam.")
@click.option("--warmup", "warmup_steps", type=click.IntRange(0), default=0, show_default=True,
              help="Ramp the learning rate up linearly over this many steps (fine-tuning: a few hundred).")
@click.option("--clip-grad", type=click.FloatRange(0), default=0.0, show_default=True, metavar="NORM",
              help="Rescale a step's gradients whose global norm exceeds NORM (0: off; logged as grad_norm).")
@click.option("--ema", type=float, default=0.0, show_default=True, metavar="DECAY", callback=_decay,
              help="Keep an exponential moving average of the weights (decay per step, e.g. 0.999, warmed up over "
                   "the first steps) and validate, sample and export it instead of the live weights, which train "
                   "on; steadier scores for picking best.pt when fine-tuning. 0: off.")
@click.option("--average-from", type=click.IntRange(0), default=None, metavar="STEP",
              help="From step STEP on, also write the exported weights (the moving average with --ema) at every "
                   "epoch's end to RUN/snapshots/, and at the end their uniform average to RUN/averaged.pt: the "
                   "shipped weights' recipe (weights/MODEL_CARD.md).")
@click.option("--lr-decay-every", type=click.IntRange(0), default=0, show_default=True,
              help="Multiply the learning rate by --lr-decay-factor every N epochs (0: constant).")
@click.option("--lr-decay-factor", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="What --lr-decay-every multiplies the learning rate by.")
@click.option("--epochs", type=click.IntRange(1), help="Epochs to train [default: 50, or none with --max-steps/--time-budget].")
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many optimizer steps in all.")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop cleanly (checkpoint and weights saved) before this much wall time has passed.")
@click.option("--crop", type=click.IntRange(32), default=128, show_default=True, help="Training crop side (divisible by 32).")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=0.05, show_default=True,
              help="Share of the cache held out for validation (whole sequence blocks).")
@click.option("--val-max", type=click.IntRange(1), default=512, show_default=True, help="Most validation triplets.")
@click.option("--val-every", type=click.IntRange(0), default=0, show_default=True,
              help="Also validate every N steps (0: at epoch ends only).")
@click.option("--samples", type=click.IntRange(0), default=4, show_default=True, help="Validation triplets drawn each epoch.")
@click.option("--log-every", type=click.IntRange(1), default=20, show_default=True, help="Steps per metrics row.")
@click.option("--checkpoint-every", type=click.IntRange(0), default=1000, show_default=True,
              help="Also write last.ckpt every N steps (0: at epoch ends only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Initial weights, data order and augmentation.")
@click.option("--workers", type=click.IntRange(0), default=_default_workers, show_default="CPU cores - 1, at most 4",
              help="DataLoader worker processes per training process.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (torchrun: cuda:LOCAL_RANK).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Autocast precision; fp16 uses a gradient scaler and needs CUDA.")
@click.option("--channels-last/--no-channels-last", default=None, help="Memory format [default: on for CUDA].")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def train(ctx: click.Context, quiet: bool, out: Path | None, resume: Path | None, **options: Any) -> None:
    """Train an interpolation network (the papers' recipe by default).

    A bare 'sepconv train' trains SepConv with L1 loss, AdaMax (lr 0.001), batch 16 and
    random 128×128 crops on the cache a bare 'sepconv prepare' wrote. Writes checkpoints,
    metrics, curves, sample images and the final weights.pt into the run folder.
    Data-parallel on several GPUs or machines: torchrun --nproc_per_node N -m sepconv_cli train ...
    """
    given = {name for name in options if ctx.get_parameter_source(name) not in
             (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None)}
    values = {FIELDS.get(name, name): value for name, value in options.items()}
    values["model_config"] = parse_model_config(options["model_config"])
    values["losses"] = list(options["loss"])
    for key in ("data", "synthetic", "val_data", "vgg_weights", "init"):
        values[key] = str(values[key]) if values[key] is not None else None

    if resume is not None:
        if out is not None:
            raise click.UsageError("--resume continues in its own folder; leave out --out")
        config = load_run_config(resume)
        for name in sorted(given):
            field = FIELDS.get(name, name)
            if field == "model":
                if values["model"] != config.model:
                    raise InputError(f"{resume} is a {config.model} run, not {values['model']}")
            elif field in RESUMABLE:
                setattr(config, field, values[field])
            elif values[field] != getattr(config, field):
                raise click.UsageError(f"--{name.replace('_', '-')} cannot change when resuming "
                                       f"(the run's settings are in {resume / 'config.json'})")
        run_dir: Path | None = resume
    else:
        if values["epochs"] is None and values["max_steps"] is None and values["time_budget"] is None:
            values["epochs"] = 50
        config = TrainConfig.from_dict(values)
        run_dir = out

    enabled = sys.stderr.isatty() and int(os.environ.get("RANK", "0")) == 0
    with training_display(enabled, quiet) as (progress, note):
        result = run_training(config, run_dir, resume=resume is not None, args=sys.argv[1:], note=note, progress=progress)
    if result.reason == "interrupted":
        click.echo(f"interrupted; continue with: sepconv train --resume {result.run_dir}", err=True)
        ctx.exit(130)
