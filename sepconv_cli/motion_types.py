"""The motion data four-frame models take beside a pair, as plain tensors: ``Neighbours``
(flows to the frames around the pair) and ``Surroundings`` (those frames themselves).

They sit at the bottom of the project (torch only) so that ``flow``, which computes them,
the engine, the stream's ``neighbourhood`` and the models can share them without importing
one another; ``flow`` re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

__all__ = ["Neighbours", "Surroundings"]


@dataclass
class Neighbours:
    """What four-frame motion needs beside the pair: ``f0m``, the flow from frame 0 to the
    frame before it, and ``f12``, from frame 1 to the frame after it (N, 2, H, W);
    ``before``/``after`` those frames' distances in units of the pair's interval (floats
    or (N,) tensors: 1 for evenly spaced frames); ``valid`` (N,) 1 where both exist."""

    f0m: Tensor
    f12: Tensor
    before: float | Tensor = 1.0
    after: float | Tensor = 1.0
    valid: Tensor | None = None

    def padded(self, right: int, bottom: int) -> Neighbours:
        """The same neighbours for frames padded on the right and bottom (edges replicated)."""
        pad = [0, right, 0, bottom]
        return Neighbours(F.pad(self.f0m, pad, mode="replicate"), F.pad(self.f12, pad, mode="replicate"),
                          self.before, self.after, self.valid)

    def crop(self, top: int, left: int, height: int, width: int) -> Neighbours:
        """The same neighbours for a tile of the frames."""
        rows, cols = slice(top, top + height), slice(left, left + width)
        return Neighbours(self.f0m[..., rows, cols], self.f12[..., rows, cols], self.before, self.after, self.valid)


@dataclass
class Surroundings:
    """The frames around a pair, for models that use four-frame motion (``wants_neighbours``).

    ``before``/``after``: (N, 3, H, W) the frame before the pair's first and after its
    second (any placeholder where ``valid`` is 0); ``before_gap``/``after_gap``: their
    distances from the pair in units of the pair's own interval (N,), from the real
    timestamps; ``valid`` (N,): 1 where both exist in the same shot, evenly enough spaced.
    """

    before: Tensor
    after: Tensor
    before_gap: Tensor
    after_gap: Tensor
    valid: Tensor
