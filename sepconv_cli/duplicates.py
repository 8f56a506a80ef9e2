"""Repeated frames: animation drawn on twos or threes, screen recordings that stand still.

A video can show one picture for several frames: cartoons are drawn "on twos" (each
drawing held for two frames), screen recorders repeat the last frame while nothing
changes, and frame-rate conversions pad with copies. Interpolating between a frame and
its own copy creates nothing, so the motion of such a clip comes out in jerks: still,
then a jump. ``DuplicateFilter`` drops the copies, so the pipeline interpolates between
the distinct pictures at the times they first appear, which spreads the motion evenly.

A long run of copies is a real pause (a screen recording's idle stretch, a held pose),
not a drawing held for a few frames: spreading the next change over it would turn a
pause and a quick move into a slow drift. A run longer than ``max_repeats`` is
therefore kept still: its last copy is passed on as a *hold*, the picture stays as it
was until then, and the change is interpolated over its own frame interval only.

Two frames count as the same picture when no 8×8 block differs much (``block_differences``:
per block, the mean absolute difference of its strongest-changing colour channel, in
8-bit levels, so a change of colour alone counts too) and the picture as a whole has not
moved (the median block stays under ``TYPICAL_LIMIT``, which catches a slow pan whose every
block changes a little). How much is "much" depends on the clip: a lossy encoder does not
code the two copies of a drawing alike (the first is often a cheap B-frame, refined in
the next), so at x264 crf 23–28 a copy's worst block differs by 5–15 levels, while a
1-pixel move of a textured object changes its blocks by 20 or more and a fast one by
100. ``AutoThreshold`` therefore learns the boundary from the clip itself, streaming: it
keeps the largest block difference of the last ``WINDOW`` frames; where they fall in two
groups (copies near the noise floor, changes well above it) the threshold goes between
them, close to the changes, and never above ``AUTO_CAP``; otherwise (no copies, or copies
only) it is ``AUTO_FLOOR``. A fixed ``threshold`` can be given instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from sepconv_cli.video_types import Frame

__all__ = [
    "AUTO",
    "AUTO_CAP",
    "AUTO_FLOOR",
    "DEFAULT_MAX_REPEATS",
    "DEFAULT_THRESHOLD",
    "AutoThreshold",
    "DuplicateFilter",
    "block_differences",
    "difference",
]

AUTO = "auto"
DEFAULT_THRESHOLD = AUTO
# Copies after a picture that are still "the same drawing": on twos, threes and fours.
DEFAULT_MAX_REPEATS = 3
_BLOCK = 8
# Levels (of 255) of the automatic threshold: where the clip shows no two groups, and at most.
AUTO_FLOOR = 10.0
AUTO_CAP = 20.0
# A median block difference above this is the whole picture moving (a pan), never a copy.
TYPICAL_LIMIT = 3.0
# Frames whose differences the automatic threshold looks back on (a second at 24 fps).
WINDOW = 24
def block_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per 8×8 block, the mean absolute difference of the channel that differs most, in
    8-bit levels (0–255): a ``(ceil(H/8), ceil(W/8))`` float32 array.

    ``a``, ``b``: ``(H, W, 3)`` RGB, uint8 or uint16. The partial blocks at the right and
    bottom edges count too (divided by their real pixel counts).
    """
    import cv2  # loaded on first use, as elsewhere: not every command needs it

    scale = np.float32(255.0 / 65535.0 if a.dtype == np.uint16 else 1.0)
    # OpenCV's SIMD absdiff and area resize (exact block means at an integer factor) are
    # about 10 times faster than numpy here: at 1080p this runs for every decoded frame.
    diff = cv2.absdiff(a, b).astype(np.float32)
    h, w = diff.shape[:2]
    bh, bw = -(-h // _BLOCK), -(-w // _BLOCK)
    if (bh * _BLOCK, bw * _BLOCK) != (h, w):
        diff = cv2.copyMakeBorder(diff, 0, bh * _BLOCK - h, 0, bw * _BLOCK - w, cv2.BORDER_CONSTANT, value=0)
    means = cv2.resize(diff, (bw, bh), interpolation=cv2.INTER_AREA).reshape(bh, bw, 3).max(axis=-1)
    rows = np.minimum(_BLOCK, h - np.arange(bh) * _BLOCK)[:, None]
    cols = np.minimum(_BLOCK, w - np.arange(bw) * _BLOCK)[None, :]
    return means * (scale * _BLOCK * _BLOCK / (rows * cols)).astype(np.float32)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest of ``block_differences(a, b)``: 0 for identical frames, in 8-bit levels."""
    return float(block_differences(a, b).max())


class AutoThreshold:
    """The largest block difference that still counts as a copy, learnt from the clip.

    ``add(peak)`` records a frame's largest block difference from the picture it was
    compared with; ``value()`` is the threshold for the next frame. Of the last ``window``
    peaks, the lower quartile stands for the copies and the 90th percentile for the
    changes; when the changes are at least 3 times the copies (a clip with copies in it),
    the threshold is their weighted geometric mean, 4/5 of the way (in log scale) towards
    the changes but at least 1.25 times below them; then clamped to ``[floor, cap]``.
    """

    def __init__(self, floor: float = AUTO_FLOOR, cap: float = AUTO_CAP, window: int = WINDOW) -> None:
        self.floor, self.cap = floor, cap
        self.peaks: deque[float] = deque(maxlen=window)

    def add(self, peak: float) -> None:
        self.peaks.append(peak)

    def value(self) -> float:
        if len(self.peaks) < 4:
            return self.floor
        low, high = np.percentile(np.asarray(self.peaks), [25, 90])
        low = max(float(low), 1.0)  # exact copies: the noise floor is not zero
        if high < 3 * low:
            return self.floor
        between = low ** 0.2 * float(high) ** 0.8
        return float(np.clip(min(between, high / 1.25), self.floor, self.cap))


class DuplicateFilter:
    """Drop the repeats of each picture from a stream of frames.

    Iterating ``filter(frames)`` yields ``(frame, hold)``: every distinct picture with
    ``hold=False`` (at its first appearance, so at its true time), and with ``hold=True``
    the last copy of a run longer than ``max_repeats`` (the picture stands still until
    then) and the very last frame of the stream when it is a copy (so the output still
    ends where the input does). ``found`` counts the copies seen. ``threshold``: ``"auto"``
    (learnt from the clip, see the module docstring) or a fixed number of 8-bit levels
    that no block of a copy may differ by.
    """

    def __init__(self, threshold: float | str = DEFAULT_THRESHOLD, max_repeats: int = DEFAULT_MAX_REPEATS) -> None:
        if threshold != AUTO and (isinstance(threshold, str) or threshold < 0):
            raise ValueError(f"threshold must be {AUTO!r} or at least 0, not {threshold!r}")
        if max_repeats < 0:
            raise ValueError(f"max_repeats must be at least 0, not {max_repeats}")
        self.threshold = threshold
        self.max_repeats = max_repeats
        self.found = 0
        self._auto = AutoThreshold() if threshold == AUTO else None

    def is_copy(self, kept: np.ndarray, frame: np.ndarray) -> bool:
        """Whether ``frame`` shows the same picture as ``kept`` (RGB, as ``block_differences``);
        with the automatic threshold, every call also teaches it."""
        blocks = block_differences(kept, frame)
        peak = float(blocks.max())
        if self._auto is None:
            return peak <= float(self.threshold)
        limit = self._auto.value()
        self._auto.add(peak)
        return peak <= limit and float(np.median(blocks)) <= TYPICAL_LIMIT

    def __call__(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, bool]]:
        kept: Frame | None = None
        copies = 0
        last_copy: Frame | None = None
        for frame in frames:
            # Compared with the picture's first frame, not the previous copy, so a slow
            # fade cannot creep through as a chain of "copies".
            if kept is not None and self.is_copy(kept.rgb, frame.rgb):
                copies += 1
                self.found += 1
                last_copy = frame
                continue
            if copies > self.max_repeats and last_copy is not None:
                yield last_copy, True
            yield frame, False
            kept, copies, last_copy = frame, 0, None
        if last_copy is not None:
            yield last_copy, True
