"""Each decoded frame of a stream in the forms the engine takes, made once: its float tensor
and, for DIS and the flow memo, its ``Grey``.

With four-frame motion a frame is either frame of two pairs and the neighbour of two more,
and with the DIS prefetch the background thread reads it too: converted and greyed by each
of them, it was converted about five times and greyed and hashed twice (docs/performance.md).
The schedules keep a ``FrameCache`` and take every tensor and grey from it, in either thread.

Memory: the cache holds only frames the stream still holds (the pairs of this batch and of
the one announced after it, with the frames around them), as float tensors; it forgets
each frame once the stream has passed it (``advance``), so a 4K stream keeps no more frames
than without it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Literal, overload

import numpy as np
import torch

from sepconv_cli.flow import Grey, greys
from sepconv_cli.video_types import Frame

__all__ = ["FrameCache", "to_tensor"]


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8/uint16 → ``(3, H, W)`` float32 in [0, 1] (full precision), contiguous.

    The values are those of ``rgb.astype(float32) / top``, bit for bit (the integers convert
    exactly and the division is the same float32 one); converting while transposing into
    a fresh (3, H, W) buffer saves the HWC float temporary a batch's ``torch.stack`` then
    copied.
    """
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    out = torch.empty((3, *rgb.shape[:2]), dtype=torch.float32)
    out.copy_(torch.from_numpy(rgb).permute(2, 0, 1))
    return out.div_(top)


class _Entry:
    """One frame's forms, each made by whichever thread asks first; the other waits for it."""

    def __init__(self, frame: Frame) -> None:
        self.frame = frame  # held, so that its id, the cache's key, is not reused while cached
        self.lock = threading.Lock()
        self._tensor: torch.Tensor | None = None
        self._grey: Grey | None = None

    def tensor(self) -> torch.Tensor:
        with self.lock:
            if self._tensor is None:
                self._tensor = to_tensor(self.frame.rgb)
            return self._tensor

    def grey(self) -> Grey:
        tensor = self.tensor()
        with self.lock:
            if self._grey is None:
                self._grey = greys(tensor.unsqueeze(0))[0]
            return self._grey


class FrameCache:
    """The frames of one stream as ``(3, H, W)`` float tensors (``to_tensor``) and ``Grey``s,
    each made once, safe to share between the caller and the prefetch thread.

    The tensors are lent, not copied: whoever takes one must not write into it (the engine
    never does). ``advance`` forgets the frames the stream has passed; a prefetch that comes
    after the stream has passed its frames gets None from ``grey_ahead`` rather than making
    the grey again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._start: int | None = None  # frames before this index are passed
        self._ended = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def tensor(self, frame: Frame) -> torch.Tensor:
        """``frame`` as a (3, H, W) float32 tensor in [0, 1]."""
        return self._entry(frame).tensor()

    def grey(self, frame: Frame) -> Grey:
        """``frame`` as DIS and the flow memo see it."""
        return self._entry(frame).grey()

    def grey_ahead(self, frame: Frame) -> Grey | None:
        """``grey`` for a prefetch: None once the stream has passed ``frame``, whose flows
        were then taken without it (made now, the grey would be made twice)."""
        entry = self._entry(frame, ahead=True)
        return None if entry is None else entry.grey()

    def advance(self, frames: Iterable[Frame]) -> None:
        """The stream reads from the earliest of ``frames`` on (it hands pairs on in order):
        forget every frame before it."""
        indices = [frame.index for frame in frames]
        if not indices:
            return
        with self._lock:
            self._start = min(indices) if self._start is None else max(self._start, min(indices))
            self._entries = {key: entry for key, entry in self._entries.items() if entry.frame.index >= self._start}

    def clear(self) -> None:
        """The stream has ended: forget every frame, and refuse later prefetches theirs."""
        with self._lock:
            self._entries.clear()
            self._ended = True

    @overload
    def _entry(self, frame: Frame) -> _Entry: ...

    @overload
    def _entry(self, frame: Frame, ahead: Literal[True]) -> _Entry | None: ...

    def _entry(self, frame: Frame, ahead: bool = False) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(id(frame))
            if entry is None:
                if ahead and (self._ended or (self._start is not None and frame.index < self._start)):
                    return None
                entry = self._entries[id(frame)] = _Entry(frame)
            return entry
