"""What every way of predicting an in-between frame is: the ``Method`` base and its two converters.

A method takes two ``(H, W, 3)`` uint8 RGB frames and the time ``t`` in [0, 1] of the
wanted frame and returns ``(H, W, 3)`` uint8 RGB. The base sits in a module of its own,
below ``methods`` (the baselines, the model wrapper and ``build_methods``) and ``rife``,
so that ``methods`` can build a ``rife`` method without the two importing each other.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Method", "to_tensor", "to_uint8"]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round 0..255 values to 8 bits (half to even), clipped."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(1, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255)


class Method:
    """An in-between frame predictor: ``(H, W, 3)`` uint8 ×2 and t in [0, 1] → ``(H, W, 3)`` uint8.

    ``any_time`` False (the default, for predictors written before t existed): only
    called with two frames, for the midpoint, and left out of any-time protocols.
    """

    name: str = "method"
    any_time: bool = False
    # True: also called with ``before=`` and ``after=``, the given frames one interval
    # outside the pair (or None), for four-frame motion.
    takes_neighbours: bool = False

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
        raise NotImplementedError
