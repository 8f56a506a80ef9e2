"""Shot-cut detection by colour-histogram difference, and by layout where the colours alone
cannot tell.

Shared by ``interpolate`` (never blend across a cut), ``prepare`` (never train on a
triplet that straddles one), the four-frame neighbours of ``eval`` and ``--adapt``. A cut
changes the colour distribution of the whole frame at once, while motion mostly moves the
same colours around, so the distance between per-channel histograms separates the two
cheaply and without a model. Not always: the cuts of an animated film between shots of one
palette (Megamind.avi's three) move the histograms by 0.15-0.19, under the 0.4 that pans
and non-rigid motion stay below. Those cuts do change the frame's layout, which motion does
not: the correlation of two 48×27 grey thumbnails, at the best of the shifts up to about a
tenth of the frame, stays at 0.66 and above for every pair of the footage here (0.73 and
above for pans of up to 12 % of the width a frame), and falls to 0.17-0.41 across these
cuts. So a frame pair whose histograms differ by more than a quarter of the threshold
is also a cut when its layouts correlate below ``LAYOUT_THRESHOLD``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_THRESHOLD = 0.4
BINS = 32
LAYOUT_THRESHOLD = 0.5
_THUMB = (48, 27)  # (width, height) of the layout thumbnails
_SHIFTS = (5, 3)  # the largest shift tried, thumbnail pixels in x and y: about a tenth of the frame
_FLAT = 2.0  # a thumbnail whose grey levels spread less than this (of 255) has no layout to compare


def colour_histogram(frame: np.ndarray) -> np.ndarray:
    """Normalised per-channel histogram of an ``(H, W, 3)`` uint8 or uint16 RGB frame.

    Returns a ``(3, BINS)`` float array whose rows each sum to 1.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}")
    top = 65536 if frame.dtype == np.uint16 else 256
    # Subsample large frames: the histogram of every 4th pixel is as good for cuts.
    step = 2 if frame.shape[0] * frame.shape[1] > 512 * 512 else 1
    pixels = frame[::step, ::step].reshape(-1, 3)
    bins = (pixels.astype(np.int64) * BINS) // top
    hist = np.stack([np.bincount(bins[:, c], minlength=BINS) for c in range(3)]).astype(np.float64)
    return hist / hist.sum(axis=1, keepdims=True)


def _distance(ha: np.ndarray, hb: np.ndarray) -> float:
    return float(0.5 * np.abs(ha - hb).sum(axis=1).mean())


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over channels of half the L1 distance between two frames' histograms.

    0 for identical colour distributions, 1 when they share no bin at all.
    """
    return _distance(colour_histogram(a), colour_histogram(b))


def layout_thumbnail(frame: np.ndarray) -> np.ndarray:
    """The ``(27, 48)`` float32 grey thumbnail (levels of 0-255) ``layout_similarity`` compares."""
    import cv2

    scale = 255.0 / 65535.0 if frame.dtype == np.uint16 else 1.0
    rgb = frame.astype(np.float32) * scale
    grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA)


def layout_similarity(ta: np.ndarray, tb: np.ndarray) -> float:
    """The largest correlation of two ``layout_thumbnail``s over shifts of up to about a tenth
    of the frame (on their overlap): near 1 for one scene moved, low for two different ones.
    1 when either is flat (a fade, a black frame): no layout to tell them apart by."""
    if ta.std() < _FLAT or tb.std() < _FLAT:
        return 1.0
    height, width = ta.shape
    best = -1.0
    for dy in range(-_SHIFTS[1], _SHIFTS[1] + 1):
        for dx in range(-_SHIFTS[0], _SHIFTS[0] + 1):
            a = ta[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)]
            b = tb[max(0, -dy):height + min(0, -dy), max(0, -dx):width + min(0, -dx)]
            a, b = a - a.mean(), b - b.mean()
            denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
            if denominator > 0:
                best = max(best, float((a * b).sum()) / denominator)
    return best


def _cut(histograms: float, layouts: Callable[[], float], threshold: float) -> bool:
    # The layouts are compared only where the colours moved somewhat: most pairs cost a
    # histogram and no more. A threshold of 0 or less turns detection off, as in interpolate.
    if threshold <= 0:
        return False
    return histograms > threshold or (histograms > threshold / 4 and layouts() < LAYOUT_THRESHOLD)


def is_cut(a: np.ndarray, b: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """True when frames ``a`` and ``b`` are on either side of a shot cut (never with a
    ``threshold`` of 0 or less)."""
    return _cut(histogram_distance(a, b), lambda: layout_similarity(layout_thumbnail(a), layout_thumbnail(b)),
                threshold)


class CutDetector:
    """``is_cut`` for a run of neighbouring pairs (a, b), (b, c), …: each frame's histogram
    (and thumbnail, where one is needed) is computed once, since the second frame of one call
    is usually the first of the next (a 1080p histogram takes about 20 ms, more than a
    frame's budget at 60 fps).
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self._frame: np.ndarray | None = None
        self._histogram: np.ndarray | None = None
        self._thumbnail: np.ndarray | None = None

    def _histogram_of(self, frame: np.ndarray) -> np.ndarray:
        # Identity, not equality: the kept reference keeps that array alive, so a
        # different frame can never be mistaken for it.
        return self._histogram if frame is self._frame else colour_histogram(frame)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> bool:
        ha, hb = self._histogram_of(a), self._histogram_of(b)
        ta = self._thumbnail if a is self._frame else None
        self._frame, self._histogram, self._thumbnail = b, hb, None

        def layouts() -> float:
            self._thumbnail = layout_thumbnail(b)
            return layout_similarity(layout_thumbnail(a) if ta is None else ta, self._thumbnail)

        return _cut(_distance(ha, hb), layouts, self.threshold)
