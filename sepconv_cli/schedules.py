"""Which frame goes out when: the schedules that turn pairs of input frames into timed
output frames, and the model calls that fill in the new ones.

- ``Multiplying``: ``factor`` (2, 4, 8) frames per input frame, the new ones by recursive
  midpoints (``MidpointBatches``), at the exact fractions k/factor between neighbours.
- ``Retiming``: frames on the grid ``first + k/rate`` at any rate, each either an input
  frame that falls exactly on it or predicted by ``at(a, b, t)`` between the two around it.

Both take pairs already labelled with how their frames join (``Link``: blend, or a shot
cut or a pause, which repeat the earlier frame) and hand ``(image, pts, duration)`` jobs
to a ``Submit`` callback, so they know nothing of decoding or encoding. The timing rules
are set out in ``pipeline``'s module docstring.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from fractions import Fraction
from functools import partial

import numpy as np
import torch

from sepconv_cli.errors import OutputError
from sepconv_cli.flow import BatchGreys, Surroundings
from sepconv_cli.frame_cache import FrameCache, to_tensor  # noqa: F401 - to_tensor lived here, still importable
from sepconv_cli.neighbourhood import Around, batch_greys, flow_prefetch, surroundings, takes_greys, wants_neighbours
from sepconv_cli.video_types import Frame

# Both also take ``neighbours=`` where ``wants_neighbours`` says so, and ``greys=`` where
# ``takes_greys`` does.
Midpoint = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# at(a, b, t): (N, 3, H, W), (N, 3, H, W), (N,) times in (0, 1) -> (N, 3, H, W)
At = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# Where a schedule sends each output frame: (image, pts, duration), image being a decoded
# input frame, its RGB array or a new frame as a (3, H, W) tensor.
Submit = Callable[[tuple[object, int, int]], None]


def format_rate(rate: Fraction) -> str:
    """A frame rate for messages: ``25``, or ``30000/1001 (≈29.970)``."""
    if rate.denominator == 1:
        return str(rate.numerator)
    return f"{rate.numerator}/{rate.denominator} (≈{float(rate):.3f})"


# -- conversion (the other way: ``frame_cache.to_tensor``) -------------------------------


def to_rgb(t: torch.Tensor, deep: bool) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] → ``(H, W, 3)`` uint8, or uint16 when ``deep``, for the writer."""
    top = 65535.0 if deep else 255.0
    arr = t.detach().to("cpu", torch.float32).clamp(0, 1).mul(top).round_().permute(1, 2, 0)
    return np.ascontiguousarray(arr.numpy().astype(np.uint16 if deep else np.uint8))


def original(frame: Frame) -> object:
    """An input frame as the writer should get it: the decoded frame itself when there
    is one (no RGB round trip, so lossless output keeps it bit for bit), else its RGB."""
    return frame.source if frame.source is not None else frame.rgb


def _frames(pairs: list[tuple[Frame, Frame, Link]], arounds: list[Around] | None) -> list[Frame]:
    """Every frame a batch of pairs reads."""
    frames = [frame for a, b, _ in pairs for frame in (a, b)]
    return frames + [f for around in arounds or [] for f in (around.before, around.after) if f is not None]


def _stack(frames: list[torch.Tensor], lend: bool) -> torch.Tensor:
    """A batch of (3, H, W) frames. One frame is lent as a view of the cache's tensor where the
    callee is the engine (``takes_greys``), which never writes into its inputs; any other
    function gets a copy, as before the cache, in case it does."""
    return frames[0].unsqueeze(0) if lend and len(frames) == 1 else torch.stack(frames)


class MidpointBatches:
    """Runs ``midpoint`` over batches of frame pairs, recursively for factors 4 and 8."""

    def __init__(self, midpoint: Midpoint, factor: int, batch_size: int) -> None:
        self.midpoint = midpoint
        self.factor = factor
        self.batch_size = batch_size
        self.neighbours = wants_neighbours(midpoint)
        self.greys = takes_greys(midpoint)
        self.prefetch = flow_prefetch(midpoint)
        self.frames = FrameCache()  # each input frame converted and greyed once, in either thread

    def _call(self, a: torch.Tensor, b: torch.Tensor, around: Surroundings | None = None,
              greys: BatchGreys | None = None) -> torch.Tensor:
        outs = []
        for start in range(0, a.shape[0], self.batch_size):
            part = slice(start, start + self.batch_size)
            extra: dict[str, object] = {}
            if around is not None:
                extra["neighbours"] = Surroundings(around.before[part], around.after[part], around.before_gap[part],
                                                   around.after_gap[part], around.valid[part])
            if greys is not None:
                extra["greys"] = greys.rows(part)
            m = self.midpoint(a[part], b[part], **extra)
            if not isinstance(m, torch.Tensor) or tuple(m.shape) != tuple(a[start : start + self.batch_size].shape):
                got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"midpoint returned {got}, expected {tuple(a[start:start + self.batch_size].shape)}")
            outs.append(m.detach().to("cpu", torch.float32))
        return torch.cat(outs)

    def expect(self, pairs: list[tuple[Frame, Frame]], arounds: list[Around]) -> None:
        """Announce the first halving of a later ``between(pairs, arounds)`` to the engine (the
        later halvings start from new frames, not known before)."""
        if self.prefetch is None or not pairs:
            return
        self.prefetch(partial(_announced, self.frames, self._rows(pairs, arounds)))

    def _rows(self, pairs: list[tuple[Frame, Frame]], arounds: list[Around] | None) -> list[tuple[Frame, Frame, Around]]:
        """The pairs with the frames around them, where the model reads those."""
        if not self.neighbours or arounds is None:
            return [(a, b, Around()) for a, b in pairs]
        return [(a, b, around) for (a, b), around in zip(pairs, arounds)]

    def between(self, pairs: list[tuple[Frame, Frame]], arounds: list[Around] | None = None) -> list[list[torch.Tensor]]:
        """For each pair, the ``factor - 1`` frames in between, as (3, H, W) tensors. The
        first halving reads the input frames around each pair (``arounds``) when the model
        wants them; later halvings are between a new frame and an input: linear motion."""
        if not pairs:
            return []
        f = self.factor
        # positions[i][j]: frame j/f of the way from pair i's first to its second frame
        positions: list[dict[int, torch.Tensor]] = [
            {0: self.frames.tensor(a), f: self.frames.tensor(b)} for a, b in pairs
        ]
        stack = partial(_stack, lend=self.greys)
        step = f
        while step > 1:
            half = step // 2
            jobs = [(i, j) for i in range(len(pairs)) for j in range(0, f, step)]
            a = stack([positions[i][j] for i, j in jobs])
            b = stack([positions[i][j + step] for i, j in jobs])
            around = greys = None
            if step == f:  # one job a pair, on the input frames
                rows = self._rows(pairs, arounds)
                if self.neighbours and arounds is not None:
                    around = surroundings(rows, self.frames.tensor, a, b, stack)
                if self.greys:
                    greys = batch_greys(rows, self.frames.grey)
            mids = self._call(a, b, around, greys)
            for (i, j), m in zip(jobs, mids):
                positions[i][j + half] = m
            step = half
        return [[p[k] for k in range(1, f)] for p in positions]


def _announced(frames: FrameCache, rows: list[tuple[Frame, Frame, Around]]) -> BatchGreys | None:
    """A later call's greys for the engine's prefetch thread (``neighbourhood.Upcoming``): made
    there and kept in ``frames``, so that the call takes the same ones; None if the stream has
    passed those frames by the time the thread gets to them."""
    return batch_greys(rows, frames.grey_ahead)


# -- schedules ---------------------------------------------------------------------------


class Link(enum.Enum):
    """How a frame joins the one before it."""

    BLEND = "blend"  # interpolate between them
    CUT = "cut"  # a shot cut: the earlier frame is repeated, never blended
    HOLD = "hold"  # a pause (``dedup``): the earlier frame is repeated, it is the same picture


class Multiplying:
    """``factor`` frames per input frame: the input's own timestamps, the new frames at
    the exact fractions k/factor between neighbours (output time base = input's / factor)."""

    def __init__(self, midpoint: Midpoint, factor: int, input_time_base: Fraction, batch_size: int) -> None:
        self.interp = MidpointBatches(midpoint, factor, batch_size)
        self.factor = factor
        self.time_base = input_time_base / factor
        self.cuts = 0

    def nominal_rate(self, input_rate: Fraction) -> Fraction:
        return input_rate * self.factor

    @property
    def reads_neighbours(self) -> bool:
        return self.interp.neighbours

    @property
    def prefetches(self) -> bool:
        """Whether ``expect`` reaches an engine that starts the work ahead."""
        return self.interp.prefetch is not None

    def expect(self, pairs: list[tuple[Frame, Frame, Link]], arounds: list[Around]) -> None:
        """The pairs a later ``pairs`` call gets: the engine may start their flows now."""
        blending = [k for k, (_, _, link) in enumerate(pairs) if link is Link.BLEND]
        self.interp.expect([pairs[k][:2] for k in blending], [arounds[k] for k in blending])

    def pairs(self, pairs: list[tuple[Frame, Frame, Link]], submit: Submit, arounds: list[Around] | None = None) -> int:
        f = self.factor
        self.cuts += sum(link is Link.CUT for _, _, link in pairs)
        self.interp.frames.advance(_frames(pairs, arounds))
        arounds = arounds or [Around() for _ in pairs]
        blending = [k for k, (_, _, link) in enumerate(pairs) if link is Link.BLEND]
        blended = iter(self.interp.between([pairs[k][:2] for k in blending], [arounds[k] for k in blending]))
        for a, b, link in pairs:
            cut = link is not Link.BLEND
            # Frame a sits at a·factor and the k-th new frame k/factor of the way to b at
            # a·factor + k·(b − a).
            step = b.timestamp - a.timestamp
            mids = None if cut else next(blended)
            submit((original(a), a.timestamp * f, step))
            for k in range(1, f):
                submit((original(a) if cut else mids[k - 1], a.timestamp * f + k * step, step))
        return f * len(pairs)

    def last(self, before_last: Frame, last: Frame, submit: Submit) -> tuple[int, int]:
        """Show the last frame ``factor`` times over its own duration; (frames, end in the input's units)."""
        self.interp.frames.clear()
        step = last.duration or (last.timestamp - before_last.timestamp)
        for k in range(self.factor):
            submit((original(last), last.timestamp * self.factor + k * step, step))
        return self.factor, last.timestamp + step


def output_time_base(input_time_base: Fraction, rate: Fraction) -> Fraction:
    """The coarsest time base in which every input timestamp and every multiple of 1/``rate``
    is an integer: the rational gcd of the two (gcd of numerators / lcm of denominators).

    1/12800 (MP4 at 25 fps) and 60 fps give 1/38400; 1/30000 and 60 fps give 1/30000.
    """
    frame = 1 / Fraction(rate)
    tb = Fraction(input_time_base)
    return Fraction(math.gcd(tb.numerator, frame.numerator), math.lcm(tb.denominator, frame.denominator))


def midpoint_factor(rate: Fraction, input_rate: Fraction) -> int | None:
    """The ``factor`` (2, 4 or 8) with ``rate == factor × input_rate`` exactly, else None:
    the only rates a midpoint-only model can produce."""
    if not input_rate:
        return None
    ratio = Fraction(rate) / Fraction(input_rate)
    return int(ratio) if ratio in (2, 4, 8) else None


# Output time bases are C ints (AVRational) and MP4 timescales 32-bit.
_MAX_TIME_BASE = 2**31 - 1


class Retiming:
    """Frames on the grid ``first + k/rate`` (seconds, exact), each taken from the input
    pair around it: the earlier input frame itself where the times coincide exactly (or
    across a shot cut), else ``at(a, b, t)`` with ``t`` the exact fraction of the way
    from a's real timestamp to b's (so VFR input is handled)."""

    def __init__(self, at: At, rate: Fraction, input_time_base: Fraction, batch_size: int) -> None:
        self.at = at
        self.neighbours = wants_neighbours(at)
        self.greys = takes_greys(at)
        self.prefetch = flow_prefetch(at)
        self.frames = FrameCache()  # each input frame converted and greyed once, in either thread
        self.rate = Fraction(rate)
        self.input_time_base = Fraction(input_time_base)
        self.batch_size = batch_size
        self.time_base = output_time_base(self.input_time_base, self.rate)
        if self.time_base.denominator > _MAX_TIME_BASE or self.time_base.numerator > _MAX_TIME_BASE:
            raise OutputError(
                f"{format_rate(self.rate)} fps and the input's time base {self.input_time_base} have no common "
                "time base a container can store; give the rate as a simpler fraction (e.g. 30000/1001)"
            )
        self.step = int(1 / (self.rate * self.time_base))  # one output frame, in time_base units (exact)
        self.start: Fraction | None = None  # the first input frame's time, in seconds
        self.next_k = 0
        self.cuts = 0
        # The latest frame is held back one frame: whether it is the last, which may have
        # to be shortened to end with the input, is known only at the end.
        self._held: tuple[object, int, int] | None = None

    def nominal_rate(self, input_rate: Fraction) -> Fraction:
        return self.rate

    @property
    def reads_neighbours(self) -> bool:
        return self.neighbours

    @property
    def prefetches(self) -> bool:
        """Whether ``expect`` reaches an engine that starts the work ahead."""
        return self.prefetch is not None

    def expect(self, pairs: list[tuple[Frame, Frame, Link]], arounds: list[Around]) -> None:
        """The pairs a later ``pairs`` call gets: the engine may start the flows of those that
        will have a frame predicted between them (none where every grid time falls on an input
        frame, as when halving the rate)."""
        if self.prefetch is None or not pairs:
            return
        if self.start is None:
            # The first pairs announced are the first handed over, which anchor the grid.
            self.start = pairs[0][0].pts
        rows = [(a, b, around if self.neighbours else Around()) for (a, b, link), around in zip(pairs, arounds)
                if link is Link.BLEND and self._predicts(a, b)]
        if rows:
            self.prefetch(partial(_announced, self.frames, rows))

    def _predicts(self, a: Frame, b: Frame) -> bool:
        """Whether a grid time falls strictly between a and b, so that ``at`` runs for them."""
        assert self.start is not None  # anchored by ``expect`` or ``pairs``
        after_a = math.floor((a.pts - self.start) * self.rate) + 1  # the first grid time after a
        return self._time(after_a) < b.pts

    def _submit(self, job: tuple[object, int, int], submit: Submit) -> None:
        if self._held is not None:
            submit(self._held)
        self._held = job

    def _time(self, k: int) -> Fraction:
        assert self.start is not None
        return self.start + k / self.rate

    def _units(self, seconds: Fraction) -> int:
        units = seconds / self.time_base
        assert units.denominator == 1, (seconds, self.time_base)  # by construction of time_base
        return units.numerator

    def pairs(self, pairs: list[tuple[Frame, Frame, Link]], submit: Submit, arounds: list[Around] | None = None) -> int:
        if self.start is None:
            self.start = pairs[0][0].pts
        self.frames.advance(_frames(pairs, arounds))
        # plan: (image or None for "predicted", pts); rows: what to predict, in order.
        plan: list[tuple[object | None, int]] = []
        rows: list[tuple[Frame, Frame, Fraction, Around]] = []
        for (a, b, link), around in zip(pairs, arounds or [Around() for _ in pairs]):
            repeated = False
            while (s := self._time(self.next_k)) < b.pts:
                if s == a.pts or link is not Link.BLEND:
                    plan.append((original(a), self._units(s)))
                    repeated |= s != a.pts
                else:
                    plan.append((None, self._units(s)))
                    rows.append((a, b, (s - a.pts) / (b.pts - a.pts), around))
                self.next_k += 1
            self.cuts += repeated and link is Link.CUT  # a cut that would otherwise have been blended
        # Predict in chunks of batch_size frames and submit as each chunk is done, so only
        # one chunk of new frames is in memory even when one pair needs many.
        predicted: Iterator[torch.Tensor] = iter(())
        done = 0
        for image, pts in plan:
            if image is None:
                frame = next(predicted, None)
                if frame is None:
                    predicted = iter(self._predict(rows[done : done + self.batch_size]))
                    done += self.batch_size
                    frame = next(predicted)
                image = frame
            self._submit((image, pts, self.step), submit)
        return len(plan)

    def _predict(self, rows: list[tuple[Frame, Frame, Fraction, Around]]) -> list[torch.Tensor]:
        stack = partial(_stack, lend=self.greys)
        a = stack([self.frames.tensor(a) for a, _, _, _ in rows])
        b = stack([self.frames.tensor(b) for _, b, _, _ in rows])
        # float64: the exact fraction rounded once (the engine takes float32).
        t = torch.tensor([float(t) for _, _, t, _ in rows], dtype=torch.float64)
        pairs = [(a_, b_, r if self.neighbours else Around()) for a_, b_, _, r in rows]
        extra: dict[str, object] = {}
        if self.neighbours:
            extra["neighbours"] = surroundings(pairs, self.frames.tensor, a, b, stack)
        if self.greys:
            extra["greys"] = batch_greys(pairs, self.frames.grey)
        out = self.at(a, b, t, **extra)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(a.shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"at returned {got}, expected {tuple(a.shape)}")
        return list(out.detach().to("cpu", torch.float32))

    def last(self, before_last: Frame, last: Frame, submit: Submit) -> tuple[int, int]:
        """Repeat the last frame on every grid time within its own duration; the final
        output frame (this one or an earlier one) is shortened to end exactly where the
        input does. Returns (frames, end in the input's time base units)."""
        self.frames.clear()
        duration = last.duration or (last.timestamp - before_last.timestamp)
        end = last.pts + duration * self.input_time_base
        count = 0
        while (s := self._time(self.next_k)) < end:
            self._submit((original(last), self._units(s), self.step), submit)
            self.next_k += 1
            count += 1
        assert self._held is not None  # the first input frame's time is always on the grid
        image, pts, step = self._held
        submit((image, pts, min(step, self._units(end) - pts)))
        self._held = None
        return count, last.timestamp + duration


# Either schedule: what the streaming loop drives.
Schedule = Multiplying | Retiming
