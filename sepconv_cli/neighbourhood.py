"""The frames around each pair of a stream, for four-frame (quadratic) motion.

A model that reads them (``Interpolator.wants_neighbours``) gets, beside the pair (a, b),
the input frame before a and the one after b, with their real distances. They count only
where the motion can be one smooth curve through all four: no shot cut and no pause
(``--dedup``) between any two of them, and neighbours neither much closer nor much
farther than the pair itself (VFR input, frames dropped by dedup); elsewhere the model
falls back to linear motion. The stream runs one frame ahead for this: a pair is handed
on once the frame after it has been decoded (or the input ended).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sepconv_cli.flow import BatchGreys, Grey, Surroundings
from sepconv_cli.video_types import Frame

# Neighbours farther than this many pair intervals (or closer than its inverse) break the
# constant-acceleration fit more often than they help; the pair then uses linear motion.
MAX_GAP_RATIO = 2.0

# A later interpolation call announced ahead (``Interpolator.prefetch``): a function giving
# its frames, called when they are wanted, not when announced: as (frame1, frame2,
# neighbours), or as the ``BatchGreys`` a stream keeps of them (then no frame is greyed
# again), or None where the caller has already passed that call.
Upcoming = Callable[[], tuple[torch.Tensor, torch.Tensor, Surroundings | None] | BatchGreys | None]


@dataclass
class Around:
    """The input frames next to a pair: ``before`` precedes its first frame, ``after``
    follows its second; each None where there is none in the same shot, or a pause."""

    before: Frame | None = None
    after: Frame | None = None


def gaps(a: Frame, b: Frame, around: Around) -> tuple[float, float] | None:
    """The neighbours' distances in units of the pair's interval, or None where they don't count."""
    if around.before is None or around.after is None:
        return None
    step = b.timestamp - a.timestamp
    if step <= 0:
        return None
    before = (a.timestamp - around.before.timestamp) / step
    after = (around.after.timestamp - b.timestamp) / step
    low = 1 / MAX_GAP_RATIO
    if not (low <= before <= MAX_GAP_RATIO and low <= after <= MAX_GAP_RATIO):
        return None
    return before, after


def surroundings(rows: list[tuple[Frame, Frame, Around]], tensor: Callable[[Frame], torch.Tensor],
                 firsts: torch.Tensor, seconds: torch.Tensor,
                 stack: Callable[[list[torch.Tensor]], torch.Tensor] = torch.stack) -> Surroundings:
    """``Surroundings`` of a batch of pairs; ``firsts``/``seconds`` are the pairs' own frames
    as tensors (placeholders where a row has no neighbours), ``tensor`` gives a frame's (3, H, W)
    tensor and ``stack`` makes a batch of them."""
    before, after, before_gap, after_gap, valid = [], [], [], [], []
    for k, (a, b, around) in enumerate(rows):
        spacing = gaps(a, b, around)
        if spacing is None:
            before.append(firsts[k])
            after.append(seconds[k])
            before_gap.append(1.0)
            after_gap.append(1.0)
            valid.append(0.0)
            continue
        assert around.before is not None and around.after is not None
        before.append(tensor(around.before))
        after.append(tensor(around.after))
        before_gap.append(spacing[0])
        after_gap.append(spacing[1])
        valid.append(1.0)
    return Surroundings(stack(before), stack(after), torch.tensor(before_gap, dtype=torch.float32),
                        torch.tensor(after_gap, dtype=torch.float32), torch.tensor(valid, dtype=torch.float32))


def batch_greys(rows: list[tuple[Frame, Frame, Around]], grey: Callable[[Frame], Grey | None]) -> BatchGreys | None:
    """The ``BatchGreys`` of a batch of pairs, each frame's from ``grey``, the neighbours' on the
    rows where they count (as ``surroundings`` decides); None if ``grey`` gives None for one
    (a prefetch the stream has overtaken)."""
    first: list[Grey] = []
    second: list[Grey] = []
    before: list[Grey | None] = []
    after: list[Grey | None] = []
    for a, b, around in rows:
        of_a, of_b = grey(a), grey(b)
        if of_a is None or of_b is None:
            return None
        of_before = of_after = None
        if gaps(a, b, around) is not None:
            assert around.before is not None and around.after is not None
            of_before, of_after = grey(around.before), grey(around.after)
            if of_before is None or of_after is None:
                return None
        first.append(of_a)
        second.append(of_b)
        before.append(of_before)
        after.append(of_after)
    return BatchGreys(first, second, before, after)


def wants_neighbours(function: Callable[..., Any]) -> bool:
    """Whether an interpolation callable takes ``neighbours``: an ``Interpolator``'s
    ``midpoint``/``at`` when its model reads them, or any function with that parameter."""
    owner = getattr(function, "__self__", None)
    if owner is not None and hasattr(owner, "wants_neighbours"):
        return bool(owner.wants_neighbours)
    try:
        return "neighbours" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def takes_greys(function: Callable[..., Any]) -> bool:
    """Whether an interpolation callable takes ``greys`` (``BatchGreys``): an ``Interpolator``'s
    ``midpoint``/``at`` whose model greys frames for DIS (``Interpolator.takes_greys``). Such
    a callable never writes into the frames it gets, so a stream may lend it its own."""
    return bool(getattr(getattr(function, "__self__", None), "takes_greys", False))


def flow_prefetch(function: Callable[..., Any]) -> Callable[[Upcoming], None] | None:
    """The ``prefetch`` of the ``Interpolator`` behind ``midpoint``/``at`` when it computes
    flows it can start ahead (``Interpolator.prefetches``), else None: the stream then
    announces each batch before the one before it runs."""
    owner = getattr(function, "__self__", None)
    if owner is None or not getattr(owner, "prefetches", False):
        return None
    return owner.prefetch
