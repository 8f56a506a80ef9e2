"""From the frames given to the patch caches the adaptation trains and is judged on:
windows spread over the input (a triplet of consecutive frames and its two neighbours,
no shot cut inside the triplet nor between it and a neighbour), patch sides that fit the
frame size, moving training patches and uniformly placed held-out windows, each at full
size and downscaled ×2, written as five-frame windows (patch cache format version 2).

The neighbours are there for the four-frame (quadratic) model, which the run feeds the
frames around each pair: trained and judged on triplets alone it would learn and be
scored on its linear fall-back only. A triplet's outer frames are two input frames
apart, so its neighbours lie two frames further out (frames k and k + 6 around the
triplet k + 2, k + 3, k + 4), the spacing the model sees between the pair; the ``video``
benchmark spaces them so too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sepconv_cli.adaptation.options import MIN_SIDE, AdaptOptions, CannotAdapt
from sepconv_cli.data.cache import AFTER, BEFORE, WINDOW_VERSION, CacheIndex, UnitRecord, write_index, write_shard
from sepconv_cli.data.prepare import _to_uint8
from sepconv_cli.scenes import CutDetector

# How far a neighbour lies outside its triplet: as far as the triplet's outer frames lie apart.
NEIGHBOUR_GAP = 2
FRAMES_PER_WINDOW = 5  # before, the triplet, after


@dataclass
class Window:
    """A triplet of consecutive input frames and its neighbours: ``start`` the index of its
    first frame, ``triplet`` the frames ``start`` to ``start + 2``, ``before``/``after``
    the frames ``start - 2`` and ``start + 4``, None where the input has none."""

    start: int
    triplet: tuple[np.ndarray, np.ndarray, np.ndarray]
    before: np.ndarray | None = None
    after: np.ndarray | None = None


Windows = list[Window]


def window_count(triplets: int) -> int:
    """How many windows hold as many frames as ``triplets`` triplets (at least two, the
    fewest ``adapt`` can use): five frames a window against three a triplet, so the 120
    triplets of ``AdaptOptions`` make 72 windows, 360 frames as before. At 1080p (6.2 MB
    a frame in 8 bits) that is 2.2 GB once spread, and at most twice that while spreading
    over an input of unknown length (``spread_windows``): 4.5 GB, as 120 triplets took."""
    return max(2, triplets * 3 // FRAMES_PER_WINDOW)


def _half(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def spread_windows(frames: Iterable[np.ndarray], count: int, total: int | None = None,
                   progress: Callable[[int], None] | None = None) -> Windows:
    """At most ``count`` windows (``Window``) spread over the whole of ``frames``, in order.

    Consecutive windows share no triplet frame (a neighbour may be another window's
    triplet frame: the same array, held once). With ``total`` (the number of frames, if
    known) the starts are evenly spaced; otherwise every third frame starts one and,
    whenever twice ``count`` are held, every other one is dropped (the spacing doubles).
    Memory stays bounded either way: fewer than ``2 * count`` windows of five frames (a
    dropped window still awaiting its ``after`` goes two frames later) and the three
    frames last read, where a start's ``before`` is found. ``window_count`` gives the
    ``count`` that holds as many frames as a number of triplets did.
    """
    step = max(3, (total - 2) // count) if total else 3
    kept: Windows = []
    recent: dict[int, np.ndarray] = {}  # the last frames read: where a start's ``before`` is
    awaited: dict[int, list[Window]] = {}  # frame index -> the windows it is the ``after`` of
    triplet: list[np.ndarray] = []
    before: np.ndarray | None = None
    start = 0

    def held(i: int) -> np.ndarray:
        # Converted once, so that a frame two windows share is one array.
        recent[i] = _to_uint8(recent[i])
        return recent[i]

    for index, frame in enumerate(frames):
        if progress is not None:
            progress(index + 1)
        recent[index] = frame
        recent.pop(index - NEIGHBOUR_GAP - 1, None)
        for window in awaited.pop(index, ()):
            window.after = held(index)
        if index < start:
            continue
        if index == start:
            before = held(start - NEIGHBOUR_GAP) if start - NEIGHBOUR_GAP in recent else None
        triplet.append(held(index))
        if len(triplet) < 3:
            continue
        window = Window(start, (triplet[0], triplet[1], triplet[2]), before)
        kept.append(window)
        awaited.setdefault(start + 2 + NEIGHBOUR_GAP, []).append(window)
        triplet, before = [], None
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
    ×2-downscaled windows are big enough for training / held-out patches."""

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
    """A patch cache of five-frame windows (version 2, as ``sepconv prepare`` writes)
    written in one go (no resume): one shard per triplet, then the index."""

    def __init__(self, root: Path, size: int, seed: int) -> None:
        self.root = root
        self.index = CacheIndex(source="adaptation", kind="frames", parameters={"size": size}, seed=seed, size=size,
                                version=WINDOW_VERSION)

    def add(self, windows: np.ndarray, flags: int, key: str) -> None:
        if len(windows):
            number = len(self.index.units)
            shard = write_shard(self.root, number, windows, np.full(len(windows), flags, np.uint8))
            self.index.units.append(UnitRecord(number, key, shard, len(windows)))

    def close(self) -> int:
        self.index.complete = True
        self.root.mkdir(parents=True, exist_ok=True)
        write_index(self.root, self.index)
        return self.index.patches


Five = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # before, frame0, middle, frame1, after


def _crop(frames: Five, y: int, x: int, size: int) -> np.ndarray:
    return np.stack([f[y : y + size, x : x + size] for f in frames]).transpose(0, 3, 1, 2)


def _patches(frames: Five, size: int, patches: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``patches`` windows of ``size`` px of one window's frames, ``(N, 5, 3, S, S)``
    uint8, all five frames cropped at the same place.

    Like ``sepconv prepare`` it prefers moving content, but by the triplet's outer frames'
    mean difference ``d`` (8-bit levels) rather than by optical flow, which would cost more
    than the training step it feeds: a window is kept with probability ``1 - exp(-d / 3)``,
    so still windows (d < 1) are rare but present, as still regions are in the video.
    """
    _, f0, _, f2, _ = frames
    h, w = f0.shape[:2]
    if h < size or w < size:
        return np.zeros((0, FRAMES_PER_WINDOW, 3, size, size), np.uint8)
    import cv2

    diff = cv2.integral(np.abs(f0.astype(np.int16) - f2.astype(np.int16)).sum(axis=2).astype(np.float64))
    kept = []
    for _ in range(4 * patches):
        if len(kept) >= patches:
            break
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        d = (diff[y + size, x + size] - diff[y, x + size] - diff[y + size, x] + diff[y, x]) / (3 * size * size)
        if rng.random() < 1 - math.exp(-d / 3):
            kept.append(_crop(frames, y, x, size))
    return np.stack(kept) if kept else np.zeros((0, FRAMES_PER_WINDOW, 3, size, size), np.uint8)


def _windows(frames: Five, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` windows of ``size`` px at uniformly drawn places, ``(count, 5, 3, S, S)`` uint8.

    Unlike training patches, held-out windows do not prefer motion: they stand for the
    whole frames the run will interpolate, still parts included (where adapting may
    shake what the original kept still)."""
    h, w = frames[1].shape[:2]
    places = [(int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))) for _ in range(count)]
    return np.ascontiguousarray(np.stack([_crop(frames, y, x, size) for y, x in places]))


def _five(window: Window, detect_cut: CutDetector) -> tuple[Five, int] | None:
    """The window's frames [before, frame0, middle, frame1, after] and neighbour flags, as
    ``sepconv prepare`` stores them: a neighbour that is missing, of another size or across
    a shot cut is replaced by a copy of the adjacent triplet frame and its flag left clear.
    None when a shot cut lies inside the triplet. ``detect_cut`` is called on neighbouring
    frames in order, so that each frame's histogram is computed once."""
    f0, f1, f2 = window.triplet
    before, after, flags = f0, f2, 0
    if window.before is not None and window.before.shape == f0.shape and not detect_cut(window.before, f0):
        before, flags = window.before, flags | BEFORE
    if detect_cut(f0, f1) or detect_cut(f1, f2):
        return None
    if window.after is not None and window.after.shape == f2.shape and not detect_cut(f2, window.after):
        after, flags = window.after, flags | AFTER
    return (before, f0, f1, f2, after), flags


def held_out_choice(count: int, options: AdaptOptions) -> set[int]:
    """Which of ``count`` triplets are held out: one in ``held_out_every``, at least
    ``held_out_min`` while that leaves half for training, at least one; spread evenly."""
    held = max(1, count // options.held_out_every, min(options.held_out_min, count // 2))
    return {int((k + 0.5) * count / held) for k in range(held)}


@dataclass
class AdaptData:
    """The patch caches ``write_window_caches`` made and how many triplets (windows) fed each."""

    train: Path
    held_out: Path
    train_triplets: int
    held_out_triplets: int
    train_patches: int
    sides: PatchSides


def write_window_caches(windows: Windows, work: Path, options: AdaptOptions, stride: int = 16) -> AdaptData:
    """The training and held-out patch caches under ``work``, five-frame windows with their
    neighbour flags (version 2). Raises ``CannotAdapt`` when the windows cannot make both
    (too small, too few across shot cuts, nothing moves)."""
    first_frame = windows[0].triplet[0]
    sides = patch_sides(first_frame.shape[0], first_frame.shape[1], options, stride)
    detect_cut = CutDetector()
    usable = [(w.start, found) for w in windows if (found := _five(w, detect_cut)) is not None]
    if len(usable) < 2:
        raise CannotAdapt("the input has too few frames (or too many shot cuts) to adapt to: "
                          "at least two triplets of consecutive frames are needed")
    train = _CacheWriter(work / "train", sides.patch, options.seed)
    held = _CacheWriter(work / "held_out", sides.held_out, options.seed)
    rng = np.random.default_rng(options.seed)
    chosen = held_out_choice(len(usable), options)
    counts = [0, 0]
    for number, (first, (frames, flags)) in enumerate(usable):
        key = f"frames:{first}-{first + 2}"
        half = None
        if sides.half_train or sides.half_held:
            # A missing neighbour is the same array as its triplet frame: halved once.
            halves = {id(f): _half(f) for f in frames}
            half = tuple(halves[id(f)] for f in frames)
        if number in chosen:
            found = [_windows(frames, sides.held_out, options.val_patches, rng)]
            if sides.half_held:
                found.append(_windows(half, sides.held_out, options.val_patches, rng))
            held.add(np.concatenate(found), flags, key)  # one unit per triplet: compare_held_out groups by it
            counts[1] += 1
            continue
        found = _patches(frames, sides.patch, options.patches, rng)
        if sides.half_train:
            found = np.concatenate([found, _patches(half, sides.patch, options.patches, rng)])
        train.add(found, flags, key)
        counts[0] += bool(len(found))
    if not train.index.patches:
        raise CannotAdapt("nothing in the input moves enough to adapt to (no moving patches found)")
    patches = train.close()
    held.close()
    return AdaptData(train.root, held.root, counts[0], counts[1], patches, sides)


def _write_textures(windows: Windows, folder: Path, count: int = 16) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, len(windows) // count)
    for k, window in enumerate(windows[::step][:count]):
        cv2.imwrite(str(folder / f"{k:03d}.png"), cv2.cvtColor(window.triplet[1], cv2.COLOR_RGB2BGR))
    return folder
