"""What decides a training run and what it reports: ``TrainConfig``, ``TrainProgress``,
``TrainResult``, the optimizer and precision choices, and the error a run stops with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from sepconv_cli.errors import SepconvError

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = {"adamax": torch.optim.Adamax, "adam": torch.optim.Adam}
# Options a resumed run may change: when and how it stops and reports, not what it learns.
# ``ema`` is one: the live weights train the same with or without an average beside them.
RESUMABLE = frozenset({"epochs", "max_steps", "time_budget", "workers", "device", "log_every", "val_every",
                       "checkpoint_every", "vgg_weights", "ema", "average_from"})


class TrainingError(SepconvError):
    """Training cannot go on (a NaN loss, diverged processes)."""


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved in ``config.json`` and every checkpoint.

    Data: ``data`` is a patch cache folder (None: ``default_cache_dir()``); ``synthetic`` a
    folder of photographs to render ``scenes_per_epoch`` procedural scenes from instead
    (and ``val_scenes`` fixed ones for validation). ``crop``: training crop side (px,
    divisible by the model's stride 32). ``val_fraction``/``val_max``: held-out share of
    the cache and the most triplets validated.
    Optimisation: ``optimizer`` (adamax, as in the SepConv paper, or adam), ``lr``; a linear
    warm-up from lr/warmup_steps to lr over the first ``warmup_steps`` steps (fine-tuning a
    converged network needs one: AdaMax's first steps move every weight by about lr whatever
    its gradient, because its denominator starts at |g|); step decay by ``lr_decay_factor``
    every ``lr_decay_epochs`` epochs (0: constant). ``clip_grad``: the largest gradient norm
    a step applies (rescaled above it; 0: no clipping), so that one batch far from the rest
    cannot throw a converged network into saturated heads it never leaves. ``batch_size``
    is global (all processes). ``ema``: the decay of an exponential moving average of the
    weights (0: none; e.g. 0.999), warmed up as ``min(ema, (1 + n) / (10 + n))`` after n
    updates; when on, validation, the best checkpoint's choice, the samples, ``best.pt``
    and ``weights.pt`` are the average's, while the live weights train on (see
    ``averaging``): small-batch fine-tuning scores too noisily to pick a checkpoint by.
    ``average_from``: from that step on, every epoch's end also writes the exported weights
    to ``snapshots/`` and the run's end their uniform average to ``averaged.pt`` (None: off).
    Stopping: after ``epochs`` epochs, ``max_steps`` optimizer steps or ``time_budget``
    seconds, whichever comes first (None: no limit).
    ``losses``: specs for ``losses.parse_losses`` (empty: the model's paper objective).
    ``val_data``: a patch cache of held-out footage to validate on (and keep the best
    checkpoint by) instead of the training data's own split; with both ``data`` and
    ``synthetic`` the two are mixed, about half and half (cache triplets repeated to match).
    ``scene_size``/``max_motion``: procedural scenes' side and largest motion (px);
    ``h264``: share of scenes that go through a libx264 round trip; ``clean_target``: noise,
    JPEG and H.264 on the two inputs only (else on all three frames, as in footage, where
    the frame to predict is compressed too); ``static_fraction``: share of scenes that do
    not move; ``elastic``: share of scenes that also deform non-rigidly. Models that take any time t (flowsep) get scenes at random t.
    ``init``: weights file to start from (fine-tuning); ``validate_init`` scores it on the
    validation data before the first step, so that it competes for the best checkpoint
    (a fine-tuning run that never beats its start exports the start). ``model_config``: overrides of the
    model's defaults (a tiny network for tests, a different kernel size).
    Devices: ``precision`` fp32, bf16 or fp16 (autocast; fp16 with a gradient scaler and
    only on CUDA); ``channels_last`` None means on for CUDA.
    """

    model: str = "sepconv"
    model_config: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    synthetic: str | None = None
    scenes_per_epoch: int = 16384
    val_scenes: int = 64
    val_data: str | None = None
    scene_size: int = 150
    max_motion: float = 40.0
    h264: float = 0.0
    clean_target: bool = False
    static_fraction: float = 0.05
    elastic: float = 0.0
    losses: list[str] = field(default_factory=list)
    vgg_weights: str | None = None
    init: str | None = None
    validate_init: bool = False
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adamax"
    warmup_steps: int = 0
    clip_grad: float = 0.0
    ema: float = 0.0
    average_from: int | None = None
    lr_decay_epochs: int = 0
    lr_decay_factor: float = 0.5
    epochs: int | None = 50
    max_steps: int | None = None
    time_budget: float | None = None
    crop: int = 128
    val_fraction: float = 0.05
    val_max: int = 512
    val_every: int = 0
    samples: int = 4
    log_every: int = 20
    checkpoint_every: int = 1000
    seed: int = 0
    workers: int = 4
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainProgress:
    """What the progress callback receives after every step (rank 0 only)."""

    step: int
    total_steps: int | None
    epoch: int
    loss: float
    samples_per_s: float
    val_psnr_start: float | None = None  # the first validation's PSNR (the ``init`` weights' with validate_init)
    val_psnr_best: float | None = None


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    reason: str  # "epochs", "max-steps", "time-budget", "interrupted"
    best_psnr: float | None
    weights: Path
    samples_per_s: float
    best_step: int | None = None
    start_psnr: float | None = None  # the first validation's PSNR


Note = Callable[[str], None]
ProgressFn = Callable[[TrainProgress], None]


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

