"""``adapt``: the windows' caches, the original weights scored, ``sepconv train``'s loop run
on the caches within the budget, and the better of the two weights kept."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sepconv_cli.adaptation.held_out import _psnr, _triplet_psnrs, compare_held_out, scale_gains, score_held_out
from sepconv_cli.adaptation.options import AdaptOptions, AdaptProgress, AdaptResult, CannotAdapt, Note, Progress
from sepconv_cli.adaptation.triplets import (AdaptData, _write_textures, patch_sides, spread_windows, window_count,
                                             write_window_caches)
from sepconv_cli.training import TrainConfig, TrainingError, TrainProgress
from sepconv_cli.training import train as run_training


def _stride(model: str) -> int:
    from sepconv_cli.models.registry import MODELS

    spec = MODELS.get(model)
    return int(getattr(spec.cls, "stride", 32)) if spec else 32


def _train_config(options: AdaptOptions, data: AdaptData, base: Path, textures: Path | None, model: str,
                  device: str, budget: float | None) -> TrainConfig:
    """The training run: ``data``'s caches, the options' recipe, ``budget`` seconds or ``options.steps``."""
    sides = data.sides
    # A clip of a few triplets may hold fewer training patches than a batch.
    batch_size = max(1, min(options.batch_size, data.train_patches))
    return TrainConfig(
        model=model, init=str(base), data=str(data.train), val_data=str(data.held_out),
        # The original weights are scored by adapt itself (per window, for compare_held_out):
        # the loop's own best checkpoint is then chosen among trained ones.
        validate_init=False,
        synthetic=str(textures) if textures else None, scene_size=sides.patch, val_scenes=0,
        scenes_per_epoch=max(64, 4 * batch_size), max_motion=24.0,
        batch_size=batch_size, crop=sides.crop, optimizer=options.optimizer, lr=options.lr,
        warmup_steps=options.warmup_steps, clip_grad=options.clip_grad, ema=options.ema,
        losses=list(options.losses), epochs=None, max_steps=options.steps,
        time_budget=None if options.steps else budget,
        val_every=100 if options.steps is None else max(1, options.steps // 4), val_fraction=0.0,
        samples=0, checkpoint_every=0, log_every=50, seed=options.seed, workers=1 if textures else 0,
        device=device,
    )


def _train(config: TrainConfig, work: Path, base_psnr: float, report: Progress) -> tuple[Path | None, int]:
    """Run ``config``; returns the weights of its best checkpoint (the last when it never
    validated), None when it diverged or took no step, and the steps taken. Ctrl-C raises
    ``KeyboardInterrupt``."""
    started = time.perf_counter()
    budget = config.time_budget

    def on_step(p: TrainProgress) -> None:
        gain = None if p.val_psnr_best is None else p.val_psnr_best - base_psnr
        if budget is not None:
            report(AdaptProgress("training", min(time.perf_counter() - started, budget), budget, p.step, gain))
        else:
            report(AdaptProgress("training", p.step, p.total_steps, p.step, gain))

    try:
        result = run_training(config, work / "run", args=["adapt"], note=lambda text: None, progress=on_step)
    except TrainingError:  # diverged (a NaN loss): what it learned is worthless, the original is not
        return None, 0
    if result.reason == "interrupted":
        raise KeyboardInterrupt
    if result.step == 0:
        return None, 0
    best = result.run_dir / "best.pt"  # exported only when the best checkpoint is not the last
    return (best if best.exists() else result.weights), result.step


def adapt(frames: Iterable[np.ndarray], base: Path, work: Path, options: AdaptOptions = AdaptOptions(), *,
          total: int | None = None, model: str = "flowsep", device: str = "auto", note: Note | None = None,
          progress: Progress | None = None) -> AdaptResult:
    """Fine-tune the weights file ``base`` on ``frames`` (``(H, W, 3)`` uint8 or uint16 RGB, in
    order; ``total`` their number if known) on ``device``, working in the folder ``work``.

    Returns an ``AdaptResult`` whose ``weights`` lie in ``work``. Raises ``CannotAdapt``
    when the frames cannot be adapted to (too few, too small, nothing moves, no time left
    to train) and ``KeyboardInterrupt`` when Ctrl-C stopped the training.
    """
    note = note or (lambda text: None)
    report = progress or (lambda p: None)
    started = time.perf_counter()
    frames = iter(frames)
    first = next(frames, None)
    if first is not None:  # too small: say so before reading the rest
        patch_sides(first.shape[0], first.shape[1], options, _stride(model))
        frames = itertools.chain([first], frames)
    # A window holds five frames, a triplet three: the frames held stay those of ``options.triplets`` triplets.
    windows = spread_windows(frames, window_count(options.triplets), total,
                             progress=lambda n: report(AdaptProgress("triplets", n, total)))
    if len(windows) < 2:
        raise CannotAdapt("the input has too few frames to adapt to (at least six are needed)")
    data = write_window_caches(windows, work, options, _stride(model))
    textures = _write_textures(windows, work / "textures") if options.scenes else None
    del windows
    scoring = time.perf_counter()
    base_errors = score_held_out(base, data.held_out, device, options.batch_size)
    scoring = time.perf_counter() - scoring
    # What is left once the adapted weights are scored too (as long as the original took).
    remaining = options.budget - (time.perf_counter() - started) - scoring
    if options.steps is None and remaining < 10:
        raise CannotAdapt(f"an adaptation budget of {options.budget:g} s leaves no time to train after "
                          "reading the input (give more, e.g. --adapt 5m)")
    window_psnr = float(np.mean([_psnr(float(e)) for e in np.concatenate(base_errors)]))  # as the loop validates
    config = _train_config(options, data, base, textures, model, device, remaining)
    candidate, steps = _train(config, work, window_psnr, report)
    verdict = tried = per_scale = None
    if candidate is not None:
        errors = score_held_out(candidate, data.held_out, device, options.batch_size)
        verdict = compare_held_out(base_errors, errors, options.min_gain)
        tried = verdict.gain
        per_scale = scale_gains(base_errors, errors, 2 if data.sides.half_held else 1)
    adapted = verdict is not None and verdict.better
    if adapted:
        weights = candidate
    else:
        weights = work / "original.pt"
        shutil.copyfile(base, weights)
    base_psnr = float(_triplet_psnrs(base_errors).mean())
    outcome = AdaptResult(weights, adapted, base_psnr, verdict.psnr if adapted else base_psnr, steps,
                          time.perf_counter() - started, data.train_triplets, data.held_out_triplets,
                          margin=verdict.margin if verdict else None, tried_gain=tried, scale_gains=per_scale,
                          tried=candidate)
    note(outcome.summary())
    return outcome
