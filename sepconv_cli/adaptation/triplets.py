"""From the frames given to the patch caches the adaptation trains and is judged on:
triplets spread over the input (shot cuts skipped), patch sides that fit the frame size,
moving training patches and uniformly placed held-out windows, each at full size and
downscaled ×2."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sepconv_cli.adaptation.options import MIN_SIDE, AdaptOptions, CannotAdapt
from sepconv_cli.data.cache import CacheIndex, UnitRecord, write_index, write_shard
from sepconv_cli.data.prepare import _to_uint8
from sepconv_cli.scenes import CutDetector

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
