"""Shot-cut detection by colour-histogram difference.

Shared by ``interpolate`` (never blend across a cut) and ``prepare`` (never train on a
triplet that straddles one). A cut changes the colour distribution of the whole frame
at once, while motion mostly moves the same colours around, so the distance between
per-channel histograms separates the two cheaply and without a model.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.4
BINS = 32


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


def is_cut(a: np.ndarray, b: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """True when frames ``a`` and ``b`` are on either side of a shot cut."""
    return histogram_distance(a, b) > threshold


class CutDetector:
    """``is_cut`` for a run of neighbouring pairs (a, b), (b, c), …: each frame's histogram
    is computed once, since the second frame of one call is usually the first of the next
    (a 1080p histogram takes about 20 ms, more than a frame's budget at 60 fps).
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self._frame: np.ndarray | None = None
        self._histogram: np.ndarray | None = None

    def _histogram_of(self, frame: np.ndarray) -> np.ndarray:
        # Identity, not equality: the kept reference keeps that array alive, so a
        # different frame can never be mistaken for it.
        return self._histogram if frame is self._frame else colour_histogram(frame)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> bool:
        ha, hb = self._histogram_of(a), self._histogram_of(b)
        self._frame, self._histogram = b, hb
        return _distance(ha, hb) > self.threshold
