"""Adapting a model to one video before interpolating it (``interpolate --adapt``).

A trained interpolator has seen other footage; the video at hand is the best example of
itself. ``adapt`` fine-tunes the weights on triplets ``(i, i+1, i+2)`` of the frames it is
*given*, with the project's own training loop (``training.train``), then returns the
better of the adapted and the original weights on triplets it held out:

- **Triplets**: up to ``AdaptOptions.triplets`` spread evenly over the frames (a shot
  cut inside one drops it), cut into patches, moving windows preferred (``_patches``).
  Inside a triplet the outer frames are two steps apart, twice the motion the model meets
  between neighbours at run time, so each triplet is also used downscaled ×2 (the same
  motion in pixels as at run time, on half-size content) where that copy still holds a
  patch.
- **Any frame size**: the patch sides are chosen from the frames (``patch_sides``): the
  options' sides on large frames, down to ``MIN_SIDE`` px on small ones, crops a multiple
  of the model's stride. Input that cannot be adapted to at all (frames under
  ``MIN_SIDE``, too few frames for two triplets, nothing moving, no time left to train)
  raises ``CannotAdapt``: the caller warns and interpolates with the original weights.
- **Recipe**: Adam at ``lr`` 2e-4 with a ``warmup_steps`` linear ramp. The weights are
  already converged; AdaMax without a warm-up moves every weight by about ``lr`` in its
  first steps whatever its gradient, which shakes the network before it learns anything.
- **Against over-fitting**: with ``scenes``, half of every batch is procedural scenes
  (``data.synthetic``) textured with frames of the video itself, with known ground truth at
  random t. Off by default: in budgets of minutes the model sees each patch a few times
  only, the held-out check below guards the rest, and every step spent on scenes is one
  not spent on the video.
- **Never worse**: triplets spread over the clip (one in ``held_out_every``, at least
  ``held_out_min`` while that leaves half for training) are kept out of training, each
  scored on ``val_patches`` windows at full size and as many on its ×2 copy (run-time
  motion). The training loop keeps its best checkpoint on them; that checkpoint is used
  only if its gain over the original weights, per held-out triplet (``compare_held_out``),
  exceeds both ``min_gain`` and twice its standard error: the run-time gain of a choice
  made on a few triplets is otherwise mostly noise. ``AdaptResult.adapted`` says which.

Nothing here reads a frame it is not given: ``eval --adapt`` hands it the frames a method
may see (the even frames of the ``video`` benchmark), never the frames it is scored on,
and both training and held-out triplets come from those.

``adapted_weights`` adds a cache keyed by the input's bytes, the base weights' bytes and
the options, so a second run on the same input (other output settings) reuses the work.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sepconv_cli.data.cache import CacheIndex, UnitRecord, write_index, write_shard
from sepconv_cli.data.prepare import _to_uint8
from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.scenes import CutDetector
from sepconv_cli.training import TrainConfig, TrainingError, TrainProgress
from sepconv_cli.training import train as run_training

FORMAT_VERSION = 2  # of the cached adaptations: bump when a change makes old ones stale
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
    ``triplets``: most triplets drawn from the input. Held out: one triplet in
    ``held_out_every``, at least ``held_out_min`` (but never more than half), each scored on
    ``val_patches`` windows per scale (full size and ×2 smaller) of at most ``val_patch`` px.
    ``patch``/``patches``: largest training patch side (px) and most patches per triplet;
    ``crop``: largest training crop. The sides used come from the frame size
    (``patch_sides``), down to ``MIN_SIDE``. ``min_gain``: the least held-out gain (dB) for
    which the adapted weights are used (more when the held-out triplets disagree).
    Optimisation as in ``sepconv train``: ``optimizer`` (adam or adamax), ``lr``,
    ``warmup_steps`` (linear learning-rate ramp), ``batch_size``.
    """

    budget: float = 300.0
    steps: int | None = None
    optimizer: str = "adam"
    lr: float = 2e-4
    warmup_steps: int = 100
    batch_size: int = 8
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
        if self.warmup_steps < 0 or self.min_gain < 0 or self.val_patches < 1 or self.held_out_every < 1:
            raise InputError("warmup_steps and min_gain must be at least 0, val_patches and held_out_every at least 1")


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
    stepped)."""

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
        if self.adapted:
            return f"adapted ({how}): {self.gain:+.2f} dB on {held}"
        if self.tried_gain is None or self.margin is None:
            return f"kept the original weights ({how}): adapting gained nothing on {held}"
        return (f"kept the original weights ({how}): adapting gained {self.tried_gain:+.2f} dB on {held}, "
                f"not more than the {self.margin:.2f} dB they can tell from noise")


Progress = Callable[[AdaptProgress], None]
Note = Callable[[str], None]
Triplets = list[tuple[int, tuple[np.ndarray, ...]]]


def _half(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def spread_triplets(frames: Iterable[np.ndarray], count: int, total: int | None = None,
                    progress: Callable[[int], None] | None = None) -> Triplets:
    """At most ``count`` triplets of consecutive frames, spread over the whole of ``frames``.

    Returns ``(index of the first frame, (f0, f1, f2))`` in order; consecutive triplets
    share no frame. With ``total`` (the number of frames, if known) the starts are evenly
    spaced; otherwise every third frame starts one and, whenever twice ``count`` are held,
    every other one is dropped (the spacing doubles), so memory stays bounded.
    """
    step = max(3, (total - 2) // count) if total else 3
    kept: Triplets = []
    window: list[np.ndarray] = []
    start = 0
    for index, frame in enumerate(frames):
        if progress is not None:
            progress(index + 1)
        if index < start:
            continue
        window.append(_to_uint8(frame))
        if len(window) == 3:
            kept.append((start, tuple(window)))
            window = []
            if len(kept) >= 2 * count:
                kept = kept[::2]
                step *= 2
            start += step
    if len(kept) > count:
        kept = [kept[round(k * (len(kept) - 1) / (count - 1))] for k in range(count)] if count > 1 else kept[:1]
    return kept


@dataclass(frozen=True)
class PatchSides:
    """The patch sides for one frame size (px). ``half_train``/``half_held``: whether the
    ×2-downscaled triplets are big enough for training / held-out patches."""

    patch: int
    crop: int
    held_out: int
    half_train: bool
    half_held: bool


def patch_sides(height: int, width: int, options: AdaptOptions, stride: int = 16) -> PatchSides:
    """The training patch, crop and held-out window sides for frames of ``height`` × ``width``:
    the options' sides where the frames allow, else the largest multiples of ``stride`` that
    fit (crops and held-out windows must be: the network needs sides divisible by it).
    Raises ``CannotAdapt`` when the frames' short side is under ``MIN_SIDE``."""
    short = min(height, width)
    if short < MIN_SIDE:
        raise CannotAdapt(f"frames of {width}×{height} are too small to adapt to (at least {MIN_SIDE} px on a side)")
    unit = max(16, stride)

    def fit(*limits: int) -> int:
        return max(MIN_SIDE, min(limits) // unit * unit)

    patch = fit(options.patch, short)
    half_short = short // 2
    # Held-out windows of one side for both scales (the cache holds one size), the
    # ×2 copy's run-time motion being worth the smaller window.
    half_held = half_short >= MIN_SIDE
    held_out = fit(options.val_patch, half_short if half_held else short)
    return PatchSides(patch, fit(options.crop, patch), held_out, half_short >= patch, half_held)


class _CacheWriter:
    """A patch cache written in one go (no resume): shards of triplets, then the index."""

    def __init__(self, root: Path, size: int, seed: int) -> None:
        self.root = root
        self.index = CacheIndex(source="adaptation", kind="frames", parameters={"size": size}, seed=seed, size=size)

    def add(self, triplets: np.ndarray, key: str) -> None:
        if len(triplets):
            number = len(self.index.units)
            shard = write_shard(self.root, number, triplets)
            self.index.units.append(UnitRecord(number, key, shard, len(triplets)))

    def close(self) -> int:
        self.index.complete = True
        self.root.mkdir(parents=True, exist_ok=True)
        write_index(self.root, self.index)
        return self.index.patches


def _patches(frames: tuple[np.ndarray, ...], size: int, patches: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``patches`` windows of ``size`` px of one triplet, ``(N, 3, 3, S, S)`` uint8.

    Like ``sepconv prepare`` it prefers moving content, but by the outer frames' mean
    difference ``d`` (8-bit levels) rather than by optical flow, which would cost more
    than the training step it feeds: a window is kept with probability ``1 - exp(-d / 3)``,
    so still windows (d < 1) are rare but present, as still regions are in the video.
    """
    f0, f1, f2 = frames
    h, w = f0.shape[:2]
    if h < size or w < size:
        return np.zeros((0, 3, 3, size, size), np.uint8)
    import cv2

    diff = cv2.integral(np.abs(f0.astype(np.int16) - f2.astype(np.int16)).sum(axis=2).astype(np.float64))
    kept = []
    for _ in range(4 * patches):
        if len(kept) >= patches:
            break
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        d = (diff[y + size, x + size] - diff[y, x + size] - diff[y + size, x] + diff[y, x]) / (3 * size * size)
        if rng.random() < 1 - math.exp(-d / 3):
            kept.append(np.stack([f[y : y + size, x : x + size] for f in frames]).transpose(0, 3, 1, 2))
    return np.stack(kept) if kept else np.zeros((0, 3, 3, size, size), np.uint8)


def _windows(frames: tuple[np.ndarray, ...], size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` windows of ``size`` px at uniformly drawn places, ``(count, 3, 3, S, S)`` uint8.

    Unlike training patches, held-out windows do not prefer motion: they stand for the
    whole frames the run will interpolate, still parts included (where adapting may
    shake what the original kept still)."""
    h, w = frames[0].shape[:2]
    places = [(int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))) for _ in range(count)]
    windows = [np.stack([f[y : y + size, x : x + size] for f in frames]).transpose(0, 3, 1, 2) for y, x in places]
    return np.ascontiguousarray(np.stack(windows))


def held_out_choice(count: int, options: AdaptOptions) -> set[int]:
    """Which of ``count`` triplets are held out: one in ``held_out_every``, at least
    ``held_out_min`` while that leaves half for training, at least one; spread evenly."""
    held = max(1, count // options.held_out_every, min(options.held_out_min, count // 2))
    return {int((k + 0.5) * count / held) for k in range(held)}


@dataclass
class AdaptData:
    """The patch caches ``write_triplet_caches`` made and how many triplets fed each."""

    train: Path
    held_out: Path
    train_triplets: int
    held_out_triplets: int
    train_patches: int
    sides: PatchSides


def write_triplet_caches(triplets: Triplets, work: Path, options: AdaptOptions, stride: int = 16) -> AdaptData:
    """The training and held-out patch caches under ``work``. Raises ``CannotAdapt`` when
    the triplets cannot make both (too small, too few across shot cuts, nothing moves)."""
    first_frame = triplets[0][1][0]
    sides = patch_sides(first_frame.shape[0], first_frame.shape[1], options, stride)
    detect_cut = CutDetector()
    usable = [(i, t) for i, t in triplets if not (detect_cut(t[0], t[1]) or detect_cut(t[1], t[2]))]
    if len(usable) < 2:
        raise CannotAdapt("the input has too few frames (or too many shot cuts) to adapt to: "
                          "at least two triplets of consecutive frames are needed")
    train = _CacheWriter(work / "train", sides.patch, options.seed)
    held = _CacheWriter(work / "held_out", sides.held_out, options.seed)
    rng = np.random.default_rng(options.seed)
    chosen = held_out_choice(len(usable), options)
    counts = [0, 0]
    for number, (first, frames) in enumerate(usable):
        key = f"frames:{first}-{first + 2}"
        half = tuple(_half(f) for f in frames) if sides.half_train or sides.half_held else None
        if number in chosen:
            found = [_windows(frames, sides.held_out, options.val_patches, rng)]
            if sides.half_held:
                found.append(_windows(half, sides.held_out, options.val_patches, rng))
            held.add(np.concatenate(found), key)  # one unit per triplet: compare_held_out groups by it
            counts[1] += 1
            continue
        found = _patches(frames, sides.patch, options.patches, rng)
        if sides.half_train:
            found = np.concatenate([found, _patches(half, sides.patch, options.patches, rng)])
        train.add(found, key)
        counts[0] += bool(len(found))
    if not train.index.patches:
        raise CannotAdapt("nothing in the input moves enough to adapt to (no moving patches found)")
    patches = train.close()
    held.close()
    return AdaptData(train.root, held.root, counts[0], counts[1], patches, sides)


def _write_textures(triplets: Triplets, folder: Path, count: int = 16) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, len(triplets) // count)
    for k, (_, frames) in enumerate(triplets[::step][:count]):
        cv2.imwrite(str(folder / f"{k:03d}.png"), cv2.cvtColor(frames[1], cv2.COLOR_RGB2BGR))
    return folder


# --------------------------------------------------------------------------------------
# Scoring on the held-out triplets


def score_held_out(weights: Path, cache: Path, device: str = "auto", batch_size: int = 8) -> list[np.ndarray]:
    """The mean squared error (predictions rounded to 8 bits, as validation does) of every
    held-out window of ``cache`` for the weights file ``weights``, one array per triplet."""
    import torch

    from sepconv_cli.data.cache import PatchCache
    from sepconv_cli.data.dataset import to_frames
    from sepconv_cli.models.registry import load_weights
    from sepconv_cli.training import resolve_device, run_model

    held = PatchCache(cache)
    where = resolve_device(device)
    network = load_weights(weights).to(where).eval()
    errors = []
    with torch.no_grad():
        for start in range(0, len(held), batch_size):
            batch = torch.from_numpy(np.stack([held[i] for i in range(start, min(start + batch_size, len(held)))]))
            frame1, middle, frame2 = to_frames(batch, where)
            prediction = run_model(network, frame1, frame2, None).float().clamp(0, 1).mul(255).round().div(255)
            errors.append((prediction.double() - middle.double()).pow(2).flatten(1).mean(1).cpu().numpy())
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


# --------------------------------------------------------------------------------------
# Adapting


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
        warmup_steps=options.warmup_steps, epochs=None, max_steps=options.steps,
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
    triplets = spread_triplets(frames, options.triplets, total,
                               progress=lambda n: report(AdaptProgress("triplets", n, total)))
    if len(triplets) < 2:
        raise CannotAdapt("the input has too few frames to adapt to (at least six are needed)")
    data = write_triplet_caches(triplets, work, options, _stride(model))
    textures = _write_textures(triplets, work / "textures") if options.scenes else None
    del triplets
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
    verdict = tried = None
    if candidate is not None:
        verdict = compare_held_out(base_errors, score_held_out(candidate, data.held_out, device, options.batch_size),
                                   options.min_gain)
        tried = verdict.gain
    adapted = verdict is not None and verdict.better
    if adapted:
        weights = candidate
    else:
        weights = work / "original.pt"
        shutil.copyfile(base, weights)
    base_psnr = float(_triplet_psnrs(base_errors).mean())
    outcome = AdaptResult(weights, adapted, base_psnr, verdict.psnr if adapted else base_psnr, steps,
                          time.perf_counter() - started, data.train_triplets, data.held_out_triplets,
                          margin=verdict.margin if verdict else None, tried_gain=tried)
    note(outcome.summary())
    return outcome


# --------------------------------------------------------------------------------------
# Kept adaptations


def cache_dir() -> Path:
    """Where kept adaptations live: ``$SEPCONV_ADAPT_CACHE``, else ``$XDG_CACHE_HOME/sepconv/adapted``
    (``~/.cache/sepconv/adapted``)."""
    env = os.environ.get("SEPCONV_ADAPT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sepconv" / "adapted"


def _hash_files(paths: Iterable[Path], digest: hashlib._Hash) -> None:
    for path in paths:
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        digest.update(b"\0" + path.name.encode() + b"\0")


def adaptation_key(inputs: Iterable[Path], base: Path, options: AdaptOptions, extra: dict | None = None) -> str:
    """A hash of the input's bytes (every file of a frame folder), the base weights' bytes,
    the options and ``extra`` (e.g. the span of the input used)."""
    digest = hashlib.sha256(f"sepconv-adaptation-{FORMAT_VERSION}".encode())
    _hash_files(inputs, digest)
    _hash_files([base], digest)
    digest.update(json.dumps({**asdict(options), **(extra or {})}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def _load_kept(folder: Path, key: str) -> AdaptResult | None:
    record, weights = folder / f"{key}.json", folder / f"{key}.pt"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not weights.is_file() or data.get("version") != FORMAT_VERSION:
        return None
    names = ("adapted", "base_psnr", "best_psnr", "steps", "seconds", "train_triplets", "held_out_triplets",
             "margin", "tried_gain")
    if any(name not in data for name in names):  # a record cut short or edited: adapt again
        return None
    return AdaptResult(weights, reused=True, **{name: data[name] for name in names})


def _keep(folder: Path, key: str, result: AdaptResult) -> Path:
    """Copy the result's weights into the cache (atomically: a half-written file never has the final name)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{key}.pt"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{key}.", suffix=".partial", delete=False) as tmp:
            with open(result.weights, "rb") as src:
                shutil.copyfileobj(src, tmp)
        os.replace(tmp.name, target)
        record = {"version": FORMAT_VERSION, **{k: v for k, v in asdict(result).items() if k not in ("weights", "reused")}}
        (folder / f".{key}.json.partial").write_text(json.dumps(record, indent=1))
        os.replace(folder / f".{key}.json.partial", folder / f"{key}.json")
    except OSError as exc:
        raise OutputError(f"cannot keep the adapted weights in {folder}: {exc.strerror or exc}") from None
    return target


def adapted_weights(frames: Callable[[], Iterator[np.ndarray]], inputs: list[Path], base: Path,
                    options: AdaptOptions = AdaptOptions(), *, total: int | None = None, model: str = "flowsep",
                    extra_key: dict | None = None, keep_in: Path | None = None, device: str = "auto",
                    note: Note | None = None, progress: Progress | None = None) -> AdaptResult:
    """``adapt`` with a cache: the kept result for the same input files (``inputs``, whose
    decoded frames ``frames()`` yields), base weights and options, else a new adaptation
    that is then kept in ``keep_in`` (default ``cache_dir()``). The returned weights lie in
    that folder. Ctrl-C leaves nothing behind but earlier kept results."""
    folder = keep_in or cache_dir()
    key = adaptation_key(inputs, base, options, extra_key)
    kept = _load_kept(folder, key)
    if kept is not None:
        return kept
    with tempfile.TemporaryDirectory(prefix="sepconv-adapt-") as work:
        result = adapt(frames(), base, Path(work), options, total=total, model=model, device=device, note=note,
                       progress=progress)
        result.weights = _keep(folder, key, result)
    return result


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
