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

Two frames count as the same picture when no 8×8 block of their luma differs by more
than ``threshold`` 8-bit levels on average. Compression noise on a repeated frame moves
block means by well under 1 level, while a real change, even a mouse pointer moving by
a pixel, moves its block by tens of levels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from sepconv_cli.video import Frame

__all__ = ["DEFAULT_MAX_REPEATS", "DEFAULT_THRESHOLD", "DuplicateFilter", "difference"]

DEFAULT_THRESHOLD = 2.0
# Copies after a picture that are still "the same drawing": on twos, threes and fours.
DEFAULT_MAX_REPEATS = 3
_BLOCK = 8
# Rec. 601 luma weights: only a change detector, so the exact matrix does not matter.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 luma on the 8-bit scale, from uint8 or uint16 RGB."""
    scale = 255.0 / 65535.0 if rgb.dtype == np.uint16 else 1.0
    return (rgb.astype(np.float32) @ _LUMA) * np.float32(scale)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest mean absolute luma difference over 8×8 blocks, in 8-bit levels (0–255).

    ``a``, ``b``: ``(H, W, 3)`` RGB, uint8 or uint16. Frames smaller than a block are
    compared whole; the partial blocks at the right and bottom edges count too.
    """
    diff = np.abs(_luma(a) - _luma(b))
    h, w = diff.shape
    bh, bw = -(-h // _BLOCK), -(-w // _BLOCK)
    # Block sums with partial edge blocks: pad with zeros, divide by the real pixel counts.
    padded = np.zeros((bh * _BLOCK, bw * _BLOCK), dtype=np.float32)
    padded[:h, :w] = diff
    sums = padded.reshape(bh, _BLOCK, bw, _BLOCK).sum(axis=(1, 3))
    rows = np.minimum(_BLOCK, h - np.arange(bh) * _BLOCK)[:, None]
    cols = np.minimum(_BLOCK, w - np.arange(bw) * _BLOCK)[None, :]
    return float((sums / (rows * cols)).max())


class DuplicateFilter:
    """Drop the repeats of each picture from a stream of frames.

    Iterating ``filter(frames)`` yields ``(frame, hold)``: every distinct picture with
    ``hold=False`` (at its first appearance, so at its true time), and with ``hold=True``
    the last copy of a run longer than ``max_repeats`` (the picture stands still until
    then) and the very last frame of the stream when it is a copy (so the output still
    ends where the input does). ``found`` counts the copies seen; ``threshold``: see the
    module docstring.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, max_repeats: int = DEFAULT_MAX_REPEATS) -> None:
        if threshold < 0:
            raise ValueError(f"threshold must be at least 0, not {threshold}")
        if max_repeats < 0:
            raise ValueError(f"max_repeats must be at least 0, not {max_repeats}")
        self.threshold = threshold
        self.max_repeats = max_repeats
        self.found = 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, bool]]:
        kept: Frame | None = None
        copies = 0
        last_copy: Frame | None = None
        for frame in frames:
            # Compared with the picture's first frame, not the previous copy, so a slow
            # fade cannot creep through as a chain of "copies".
            if kept is not None and difference(kept.rgb, frame.rgb) <= self.threshold:
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
