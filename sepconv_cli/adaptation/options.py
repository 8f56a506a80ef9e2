"""What ``adapt`` is asked and what it answers: ``AdaptOptions`` (and ``parse_duration`` for
the budget given on the command line), ``AdaptProgress``, ``AdaptResult``, and
``CannotAdapt`` for input that cannot be adapted to."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sepconv_cli.errors import InputError

# The smallest patch adapted on: at a stride of 16 the network's coarsest level is then
# 4 px, and a window smaller than that holds too little motion to learn from.
MIN_SIDE = 64
OPTIMIZERS = ("adam", "adamax")


class AdaptWarning(UserWarning):
    """The input was interpolated without adapting (see ``CannotAdapt``)."""


class CannotAdapt(InputError):
    """The input cannot be adapted to (too small, too short, still, no time to train): a
    reason to interpolate with the original weights, not to fail."""


@dataclass(frozen=True)
class AdaptOptions:
    """How to adapt. ``budget``: seconds for everything (triplets and training);
    ``steps``: stop after this many optimizer steps instead (reproducible, for tests).
    ``triplets``: how many triplets' frames (three each) the input's windows may hold: a
    window is a triplet and its two neighbours, five frames, so ``triplets * 3 // 5``
    windows are drawn (``window_count``: 72 for 120, as much memory as 120 triplets took
    before windows). Held out: one triplet in ``held_out_every``, at least ``held_out_min``
    (but never more than half), each scored on ``val_patches`` windows per scale (full
    size and ×2 smaller) of at most ``val_patch`` px.
    ``patch``/``patches``: largest training patch side (px) and most patches per triplet;
    ``crop``: largest training crop. The sides used come from the frame size
    (``patch_sides``), down to ``MIN_SIDE``. ``min_gain``: the least held-out gain (dB) for
    which the adapted weights are used (more when the held-out triplets disagree).
    Optimisation as in ``sepconv train``: ``optimizer`` (adam or adamax), ``lr``,
    ``warmup_steps`` (linear learning-rate ramp), ``clip_grad`` (the largest gradient norm a
    step applies, 0: off; the shipped weights' fine-tuning recipe, without which a converged
    network's rare gradient spikes undid what it had learnt), ``batch_size``, ``ema`` (the
    decay of the weight average that is validated and kept, 0: none) and ``losses``
    (``sepconv train --loss`` specs; empty: the model's own objective).
    """

    budget: float = 300.0
    steps: int | None = None
    optimizer: str = "adam"
    lr: float = 2e-4
    warmup_steps: int = 100
    clip_grad: float = 0.05
    batch_size: int = 8
    ema: float = 0.0
    losses: tuple[str, ...] = ()
    crop: int = 128
    patch: int = 160
    patches: int = 6
    triplets: int = 120
    held_out_every: int = 6
    held_out_min: int = 8
    val_patch: int = 192
    val_patches: int = 2
    min_gain: float = 0.05
    scenes: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise InputError(f"the adaptation budget must be positive, not {self.budget:g} s")
        if self.crop > self.patch:
            raise InputError(f"crop {self.crop} is larger than the patches ({self.patch} px)")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer '{self.optimizer}' ({', '.join(OPTIMIZERS)})")
        if not 0 <= self.ema < 1:
            raise InputError(f"the weight average's decay must be in [0, 1), not {self.ema:g}")
        if min(self.warmup_steps, self.min_gain, self.clip_grad) < 0 or self.val_patches < 1 or self.held_out_every < 1:
            raise InputError("warmup_steps, min_gain and clip_grad must be at least 0, "
                             "val_patches and held_out_every at least 1")


@dataclass
class AdaptProgress:
    """What the progress callback receives: ``phase`` "triplets" (``done`` of ``total``
    frames read, ``total`` None when unknown) or "training" (``done`` seconds of ``total``,
    ``step``, ``gain`` the best held-out PSNR so far minus the original weights', dB)."""

    phase: str
    done: float
    total: float | None
    step: int = 0
    gain: float | None = None


@dataclass
class AdaptResult:
    """``weights``: the file to interpolate with, the adapted weights or, when they did
    not beat the original ones on the held-out triplets by ``margin`` dB, a copy of those
    (``adapted`` False). PSNRs are on the held-out triplets (dB); ``tried_gain`` is the
    best checkpoint's gain there, used or not (None when training diverged or never
    stepped); ``scale_gains`` the same gain at full size and on the ×2 copies (run-time
    motion), one value when the frames are too small for the copies; ``tried`` the weights
    file of that checkpoint (in the work folder), used or not."""

    weights: Path
    adapted: bool
    base_psnr: float | None
    best_psnr: float | None
    steps: int
    seconds: float
    train_triplets: int
    held_out_triplets: int
    reused: bool = False
    margin: float | None = None
    tried_gain: float | None = None
    scale_gains: tuple[float, ...] | None = None
    tried: Path | None = None

    @property
    def gain(self) -> float:
        if self.base_psnr is None or self.best_psnr is None:
            return 0.0
        return self.best_psnr - self.base_psnr

    def summary(self) -> str:
        """One line for the run's report."""
        if self.reused:
            how = "reused the adaptation kept from an earlier run"
        else:
            how = f"{self.steps} steps in {self.seconds:.0f} s on {self.train_triplets} triplets"
        held = f"{self.held_out_triplets} held-out triplets"
        if self.scale_gains is not None and len(self.scale_gains) == 2:
            held += f" (full size {self.scale_gains[0]:+.2f}, ×2 smaller {self.scale_gains[1]:+.2f})"
        if self.adapted:
            return f"adapted ({how}): {self.gain:+.2f} dB on {held}"
        if self.tried_gain is None or self.margin is None:
            return f"kept the original weights ({how}): adapting gained nothing on {held}"
        return (f"kept the original weights ({how}): adapting gained {self.tried_gain:+.2f} dB on {held}, "
                f"not more than the {self.margin:.2f} dB they can tell from noise")


Progress = Callable[[AdaptProgress], None]
Note = Callable[[str], None]


def parse_duration(text: str) -> float:
    """``300``, ``90s``, ``5m``, ``1m30s``, ``1h``, ``4:30`` → seconds (positive)."""
    value = text.strip().lower()
    seconds: float | None = None
    try:
        if ":" in value:
            parts = [float(p) for p in value.split(":")]
            if len(parts) <= 3 and all(p >= 0 for p in parts):
                seconds = sum(p * 60 ** k for k, p in enumerate(reversed(parts)))
        else:
            match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", value)
            if match and value:
                h, m, s = (float(g) if g else 0.0 for g in match.groups())
                seconds = h * 3600 + m * 60 + s
    except ValueError:
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a duration; give seconds (300), minutes (5m), 1m30s or MM:SS")
    return seconds
