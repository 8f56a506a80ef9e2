"""Judging adapted weights on the held-out triplets (with their neighbour frames): every
window's error, and whether a candidate's gain over the original weights is more than the
triplets can tell from noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def score_held_out(weights: Path, cache: Path, device: str = "auto", batch_size: int = 8) -> list[np.ndarray]:
    """The mean squared error (predictions rounded to 8 bits, as validation does) of every
    held-out window of ``cache`` for the weights file ``weights``, one array per triplet.

    The windows reach the network as the training loop's validation feeds them
    (``training.held_out_dataset``): a four-frame model gets each window's neighbour frames,
    so the verdict judges the motion the run will interpolate with, and a model that takes
    none gets the triplets alone."""
    import torch
    from torch.utils.data import DataLoader

    from sepconv_cli.data.cache import PatchCache
    from sepconv_cli.models.registry import load_weights
    from sepconv_cli.training import batch_inputs, held_out_dataset, resolve_device, run_model

    held = PatchCache(cache)
    where = resolve_device(device)
    network = load_weights(weights).to(where).eval()
    errors = []
    with torch.no_grad():
        for batch in DataLoader(held_out_dataset(held, network), batch_size=batch_size, shuffle=False):
            x = batch_inputs(batch, where)
            prediction = run_model(network, x.frame1, x.frame2, x.times, x.neighbours)
            prediction = prediction.float().clamp(0, 1).mul(255).round().div(255)
            errors.append((prediction.double() - x.middle.double()).pow(2).flatten(1).mean(1).cpu().numpy())
    ends = np.cumsum([unit.patches for unit in held.index.units if unit.patches])
    return np.split(np.concatenate(errors), ends[:-1])


def _psnr(mse: float) -> float:
    return 10 * math.log10(1 / max(mse, 1e-10))  # 100 dB at most, as validation clamps


def _triplet_psnrs(errors: list[np.ndarray]) -> np.ndarray:
    return np.array([_psnr(float(e.mean())) for e in errors])


@dataclass(frozen=True)
class HeldOutVerdict:
    """``base_psnr``/``psnr``: mean over the held-out triplets of each triplet's PSNR (its
    windows' errors pooled, as a frame's PSNR pools its pixels); ``margin``: the gain
    needed (dB); ``better``: whether ``psnr - base_psnr`` exceeds it."""

    base_psnr: float
    psnr: float
    margin: float

    @property
    def gain(self) -> float:
        return self.psnr - self.base_psnr

    @property
    def better(self) -> bool:
        return self.gain > self.margin


def scale_gains(base: list[np.ndarray], candidate: list[np.ndarray], scales: int) -> tuple[float, ...]:
    """The mean per-triplet gain (dB) of ``candidate`` over ``base`` at each of the ``scales``
    scales of the held-out windows (``score_held_out``'s errors; a triplet's windows are its
    full-size ones, then as many of its ×2 copy): the ×2 copy's motion in pixels is the
    run's, the full size's twice that, so the two tell whether a gain is one of motion."""
    def at(errors: list[np.ndarray], scale: int) -> np.ndarray:
        return _triplet_psnrs([np.array_split(e, scales)[scale] for e in errors])

    return tuple(float((at(candidate, k) - at(base, k)).mean()) for k in range(scales))


def compare_held_out(base: list[np.ndarray], candidate: list[np.ndarray], min_gain: float) -> HeldOutVerdict:
    """Whether ``candidate``'s held-out errors (``score_held_out``) beat ``base``'s by more
    than noise: the mean per-triplet gain must exceed ``min_gain`` and twice its standard
    error across triplets (across windows when only one triplet is held out)."""
    base_psnr, psnr = _triplet_psnrs(base), _triplet_psnrs(candidate)
    gains = psnr - base_psnr
    if len(gains) < 2:  # one triplet: its windows are the only spread there is
        gains = np.array([_psnr(float(c)) - _psnr(float(b)) for b, c in zip(base[0], candidate[0])])
    two_errors = 2 * float(gains.std(ddof=1)) / math.sqrt(len(gains)) if len(gains) > 1 else 0.0
    return HeldOutVerdict(float(base_psnr.mean()), float(psnr.mean()), max(min_gain, two_errors))
