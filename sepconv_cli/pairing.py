"""The pairs of a stream, and the batches they reach a schedule in.

Each decoded frame and the one before it make a pair, labelled with how they join
(``Link``). For four-frame motion a pair waits for the frame after it, which becomes its
``Around.after``: the stream runs one frame ahead. A batch of ``batch_size`` pairs goes to
the schedule as soon as it is full, so memory holds one batch of pairs, the previous
frames and the short queues, whatever the length of the video.

Where the engine can start a batch's DIS flows early (``Schedule.prefetches``: a
four-frame FlowSep ``Interpolator``), the stream runs one batch further ahead and
announces each batch (``Schedule.expect``) before the batch before it is interpolated, so
the next pair's DIS runs in a background thread beside this pair's network (OpenCV
releases the GIL). That holds one more batch of decoded frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from sepconv_cli.neighbourhood import Around
from sepconv_cli.schedules import Link, Schedule, Submit
from sepconv_cli.video_types import Frame

__all__ = ["PairStream", "emit_pairs"]

Pair = tuple[Frame, Frame, Link]
Batch = tuple[list[Pair], list[Around]]


class PairStream:
    """The pairs of neighbouring frames from ``first`` on, each with its ``Around`` (empty
    without ``lookahead``). Once iterated, ``before_last`` and ``last`` are the last two
    frames, whose pair has no successor."""

    def __init__(self, frames: Iterable[tuple[Frame, Link]], first: tuple[Frame, Link], second: tuple[Frame, Link],
                 lookahead: bool) -> None:
        self._frames = frames
        self._first, self._second = first, second
        self.lookahead = lookahead
        self.before_last, self.last = first[0], second[0]

    def __iter__(self) -> Iterator[tuple[Pair, Around]]:
        held, held_around = (self._first[0], self._second[0], self._second[1]), Around()
        if not self.lookahead:
            yield held, held_around
        for frame, link in self._frames:
            if self.lookahead:
                if link is Link.BLEND:
                    held_around.after = frame
                yield held, held_around
                # The new pair's frame before: the one before its first, if that pair blends.
                held, held_around = (self.last, frame, link), Around(self.before_last if held[2] is Link.BLEND else None)
            else:
                yield (self.last, frame, link), Around()
            self.before_last, self.last = self.last, frame
        if self.lookahead:
            yield held, held_around


def _batches(pairs: Iterable[tuple[Pair, Around]], size: int) -> Iterator[Batch]:
    """Batches of ``size`` pairs, each handed on as soon as it is full (no frame read past it)."""
    batch: Batch = ([], [])
    for pair, around in pairs:
        batch[0].append(pair)
        batch[1].append(around)
        if len(batch[0]) >= size:
            yield batch
            batch = ([], [])
    if batch[0]:
        yield batch


def emit_pairs(
    frames: Iterable[tuple[Frame, Link]],
    first: tuple[Frame, Link],
    second: tuple[Frame, Link],
    schedule: Schedule,
    submit: Submit,
    batch_size: int,
    done: Callable[[list[Pair], int], None],
) -> tuple[Frame, Frame]:
    """Hand the schedule each pair of neighbouring frames from ``first`` on, in batches of
    ``batch_size`` pairs, telling ``done(pairs, frames_written)`` after each batch; returns
    the last two frames, whose pair has no successor."""
    stream = PairStream(frames, first, second, schedule.reads_neighbours)
    batches = _batches(stream, batch_size)
    if not schedule.prefetches:
        for pairs, arounds in batches:
            done(pairs, schedule.pairs(pairs, submit, arounds))
        return stream.before_last, stream.last
    # The first batch too: both threads then share its DIS, and every flow a batch takes
    # was announced for it (the memo keeps announced flows until they are taken).
    batch = next(batches, None)
    if batch is not None:
        schedule.expect(*batch)
    while batch is not None:
        following = next(batches, None)
        if following is not None:
            schedule.expect(*following)
        done(batch[0], schedule.pairs(batch[0], submit, batch[1]))
        batch = following
    return stream.before_last, stream.last
