"""Which patches of a footage triplet go into the cache, and their neighbour frames.

The work of one unit of ``sepconv prepare`` (it runs in a worker process): for every
triplet of frames ``(i, i + s, i + 2s)`` that does not straddle a shot cut, random
S x S windows are tried and up to ``patches`` of them kept, favouring moving content
(see ``prepare``'s module docstring and docs/data.md for the recipe). With ``windows``
(format version 2) each kept patch also holds the frames ``i - s`` and ``i + 3s`` at
the same window, when they exist and no shot cut separates them from the triplet.

Everything random comes from ``numpy.random.default_rng([seed, crc32(sequence),
triplet start])``; the neighbour frames take no random numbers, so a version-2 cache
keeps exactly the patches a version-1 cache of the same source and seed keeps.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sepconv_cli.data.cache import AFTER, BEFORE, BOTH
from sepconv_cli.errors import InputError
from sepconv_cli.images import read_image
from sepconv_cli.scenes import DEFAULT_THRESHOLD, CutDetector

# Flow-magnitude histogram of the summary: 2-px bins from 0 to 64 px, the last one open.
HIST_BIN_PX = 2.0
HIST_BINS = 33


@dataclass(frozen=True)
class SelectionParams:
    """Everything that decides which patches end up in the cache (saved in the index).

    ``size``: patch side S in pixels. ``patches``: most patches kept per triplet.
    ``stride``: frame distance inside a triplet. ``tries_per_patch``: windows tried per
    wanted patch. ``static_flow`` (px) and ``static_diff`` (grey levels, 0-255): below
    either a window is static. ``flow_scale`` (px): the 4 px of ``p(m)``.
    ``flow_side``: long side of the copy SimpleFlow runs on. ``triplets_per_unit``:
    triplets per unit of work (= per shard; also the resume granularity).
    ``windows``: store five-frame windows with the neighbour frames (format version 2)
    rather than triplets (version 1); recorded as the index's version, not a parameter.
    """

    size: int = 150
    patches: int = 20
    stride: int = 1
    seed: int = 0
    tries_per_patch: int = 4
    static_flow: float = 0.5
    static_diff: float = 2.0
    flow_scale: float = 4.0
    flow_side: int = 256
    cut_threshold: float = DEFAULT_THRESHOLD
    triplets_per_unit: int = 16
    windows: bool = True

    def check(self) -> None:
        if self.size < 8:
            raise InputError(f"--size must be at least 8 pixels, got {self.size}")
        if self.patches < 1:
            raise InputError(f"--patches must be at least 1, got {self.patches}")
        if self.stride < 1:
            raise InputError(f"--stride must be at least 1, got {self.stride}")
        if self.triplets_per_unit < 1 or self.tries_per_patch < 1 or self.flow_side < 16:
            raise InputError("triplets_per_unit and tries_per_patch must be >= 1 and flow_side >= 16")

    @property
    def margin(self) -> int:
        """Frames needed before a triplet's first frame and after its last one."""
        return self.stride if self.windows else 0


def keep_probability(mean_flow: float, flow_scale: float = 4.0) -> float:
    """``p(m) = 1 - exp(-m / flow_scale)``: chance of keeping a non-static window."""
    return float(1.0 - np.exp(-mean_flow / flow_scale))


@dataclass
class UnitTask:
    """A block of triplet starts of one sequence, with the frames they need.

    ``frames[j]`` is frame ``first + j``: a path to read (image sequences) or an
    ``(H, W, 3)`` uint8 RGB array (decoded video). With windows they include up to
    ``stride`` frames before the first triplet and after the last one, as far as the
    sequence has them.
    """

    number: int
    sequence: str
    first: int
    starts: list[int]
    frames: list[Any]
    params: SelectionParams

    @property
    def key(self) -> str:
        return f"{self.sequence}:{self.starts[0]}-{self.starts[-1]}"


@dataclass
class UnitResult:
    number: int
    key: str
    patches: np.ndarray  # (N, 3, 3, S, S) triplets or (N, 5, 3, S, S) windows, uint8
    valid: np.ndarray | None  # (N,) uint8 neighbour flags of windows, None for triplets
    counts: dict[str, int]
    flow_tried: list[int]
    flow_kept: list[int]
    problems: list[str] = field(default_factory=list)


def _flow_magnitude(a: np.ndarray, b: np.ndarray, flow_side: int) -> tuple[np.ndarray, float]:
    """SimpleFlow magnitude from ``a`` to ``b`` on a copy of long side <= ``flow_side``.

    Returns ``(magnitude, scale)``: magnitude (h, w) float64 in full-resolution pixels,
    and the factor from full-resolution coordinates to the magnitude map's.
    """
    import cv2

    h, w = a.shape[:2]
    scale = min(1.0, flow_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    # SimpleFlow takes 8-bit 3-channel images; the channel order does not matter to it.
    flow = cv2.optflow.calcOpticalFlowSF(np.ascontiguousarray(a), np.ascontiguousarray(b), 3, 2, 4)
    sy, sx = a.shape[0] / h, a.shape[1] / w
    mag = np.hypot(flow[..., 0] / sx, flow[..., 1] / sy)
    return mag.astype(np.float64), (sy + sx) / 2


def _window_mean(integral: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> float:
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return float(total / max(1, (y1 - y0) * (x1 - x0)))


def hist_bin(m: float) -> int:
    return min(HIST_BINS - 1, int(m / HIST_BIN_PX))


class _Frames:
    """The unit's frames by sequence index, read once and dropped when no longer needed."""

    def __init__(self, task: UnitTask, problems: list[str]) -> None:
        self.task = task
        self.problems = problems
        self.loaded: dict[int, np.ndarray | None] = {}

    def __call__(self, i: int) -> np.ndarray | None:
        """Frame ``i``, or None where it is unreadable or not part of the unit."""
        j = i - self.task.first
        if not 0 <= j < len(self.task.frames):
            return None
        if i not in self.loaded:
            item = self.task.frames[j]
            if isinstance(item, np.ndarray):
                self.loaded[i] = item
            else:
                self.loaded[i] = read_image(item)
                if self.loaded[i] is None:
                    self.problems.append(f"unreadable image {item}")
        return self.loaded[i]

    def forget_before(self, i: int) -> None:
        for k in [k for k in self.loaded if k < i]:
            del self.loaded[k]


def _usable_triplet(frames: _Frames, start: int, p: SelectionParams, counts: dict[str, int],
                    problems: list[str], sequence: str) -> tuple[np.ndarray, ...] | None:
    """The triplet starting at ``start`` when it can give patches, else None (counted)."""
    idx = (start, start + p.stride, start + 2 * p.stride)
    f0, f1, f2 = (frames(i) for i in idx)
    if f0 is None or f1 is None or f2 is None:
        counts["unreadable_triplets"] += 1
        return None
    if not f0.shape == f1.shape == f2.shape:
        counts["mixed_size_triplets"] += 1
        problems.append(
            f"mixed frame sizes in {sequence} (frames {idx[0]}-{idx[2]}: "
            + ", ".join(f"{f.shape[1]}x{f.shape[0]}" for f in (f0, f1, f2)) + ")"
        )
        return None
    h, w = f0.shape[:2]
    if h < p.size or w < p.size:
        counts["small_triplets"] += 1
        return None
    detect_cut = CutDetector(p.cut_threshold)
    if detect_cut(f0, f1) or detect_cut(f1, f2):
        counts["cuts"] += 1
        return None
    return f0, f1, f2


def _select_windows(triplet: tuple[np.ndarray, ...], rng: np.random.Generator, p: SelectionParams,
                    counts: dict[str, int], tried: list[int], kept: list[int]) -> list[tuple[int, int]]:
    """Top-left corners of the windows kept from ``triplet`` (the SepConv/KTH recipe)."""
    import cv2

    f0, _, f2 = triplet
    S = p.size
    h, w = f0.shape[:2]
    mag, scale = _flow_magnitude(f0, f2, p.flow_side)
    # SimpleFlow leaves NaN where it finds no match; average over the rest.
    finite = np.isfinite(mag)
    integral = cv2.integral(np.where(finite, mag, 0.0))
    valid = cv2.integral(finite.astype(np.float64))
    diff = cv2.integral(np.abs(f0.astype(np.int16) - f2.astype(np.int16)).sum(axis=2).astype(np.float64))
    corners: list[tuple[int, int]] = []
    for _ in range(p.tries_per_patch * p.patches):
        if len(corners) >= p.patches:
            break
        y = int(rng.integers(0, h - S + 1))
        x = int(rng.integers(0, w - S + 1))
        u = rng.random()  # drawn for every window, so choices never shift each other
        counts["windows"] += 1
        fy0, fx0 = int(y * scale), int(x * scale)
        fy1 = max(fy0 + 1, min(mag.shape[0], round((y + S) * scale)))
        fx1 = max(fx0 + 1, min(mag.shape[1], round((x + S) * scale)))
        share = _window_mean(valid, fy0, fx0, fy1, fx1)
        if share < 0.5:  # flow mostly undefined: no basis for a choice
            counts["no_flow_windows"] += 1
            continue
        m = _window_mean(integral, fy0, fx0, fy1, fx1) / share
        d = _window_mean(diff, y, x, y + S, x + S) / 3.0
        if m < p.static_flow or d < p.static_diff:
            counts["static_windows"] += 1
            continue
        tried[hist_bin(m)] += 1
        if u >= keep_probability(m, p.flow_scale):
            continue
        kept[hist_bin(m)] += 1
        corners.append((y, x))
    return corners


def _neighbours(frames: _Frames, start: int, triplet: tuple[np.ndarray, ...], p: SelectionParams,
                counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """``(before, after, flags)``: frames ``start - s`` and ``start + 3s``, each replaced by
    the adjacent triplet frame (its flag bit clear) where it is missing, unreadable, of
    another size, or across a shot cut."""
    f0, _, f2 = triplet
    before, after = frames(start - p.stride), frames(start + 3 * p.stride)
    detect_cut = CutDetector(p.cut_threshold)
    flags, cut = 0, False
    if before is not None and before.shape == f0.shape:
        if detect_cut(before, f0):
            cut = True
        else:
            flags |= BEFORE
    if after is not None and after.shape == f2.shape:
        if detect_cut(f2, after):
            cut = True
        else:
            flags |= AFTER
    counts["neighbour_cuts"] += cut
    return (before if flags & BEFORE else f0), (after if flags & AFTER else f2), flags


def process_unit(task: UnitTask) -> UnitResult:
    """Cut-check every triplet of ``task``, select its patches, return them."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the worker processes
    p = task.params
    S = p.size
    names = ["triplets", "cuts", "windows", "static_windows", "no_flow_windows", "patches", "unreadable_triplets",
             "mixed_size_triplets", "small_triplets"]
    # Version-1 units count exactly what they always did.
    counts = dict.fromkeys(names + (["neighbour_cuts", "patches_without_neighbours"] if p.windows else []), 0)
    tried = [0] * HIST_BINS
    kept_hist = [0] * HIST_BINS
    problems: list[str] = []
    kept: list[np.ndarray] = []
    flags: list[int] = []
    frames = _Frames(task, problems)
    seq_key = zlib.crc32(task.sequence.encode())
    for start in task.starts:
        counts["triplets"] += 1
        triplet = _usable_triplet(frames, start, p, counts, problems, task.sequence)
        if triplet is not None:
            rng = np.random.default_rng([p.seed, seq_key, start])
            corners = _select_windows(triplet, rng, p, counts, tried, kept_hist)
            stack = triplet
            if corners and p.windows:
                before, after, flag = _neighbours(frames, start, triplet, p, counts)
                stack = (before, *triplet, after)
                flags += [flag] * len(corners)
                counts["patches_without_neighbours"] += len(corners) * (flag != BOTH)
            for y, x in corners:
                kept.append(np.stack([f[y : y + S, x : x + S] for f in stack]).transpose(0, 3, 1, 2))
            counts["patches"] += len(corners)
        # Frames no later triplet of this unit needs can go (video units hold arrays).
        frames.forget_before(start + 1 - p.margin)
    n_frames = 5 if p.windows else 3
    patches = np.stack(kept) if kept else np.zeros((0, n_frames, 3, S, S), np.uint8)
    valid = np.asarray(flags, np.uint8) if p.windows else None
    return UnitResult(task.number, task.key, patches, valid, counts, tried, kept_hist, problems)
