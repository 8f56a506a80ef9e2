"""A part of a video: ``--start TIME --duration TIME``, to try settings on a few seconds.

``parse_time`` reads the times (``12.5``, ``1:02.5``, ``01:02:03.250``) exactly, as
fractions of a second. ``TimeSpan`` is what the user asked for, counted from the
video's first frame; ``Cut`` is the same span placed on a file's own timeline once its
first frame in the span is known: that frame becomes time 0 of the output, and the
copied audio and subtitle packets are moved by the same amount (``Cut.place``), so
they stay in sync. Audio is cut at packet boundaries (it is copied, not re-encoded):
it starts at the first packet at or after the cut and ends with the last one that
starts before its end, i.e. within one packet (about 21 ms for AAC at 48 kHz) of the
video's span.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import av.error

from sepconv_cli.errors import InputError

if TYPE_CHECKING:
    from sepconv_cli.video_types import VideoInfo

__all__ = ["Cut", "SpanError", "TimeSpan", "parse_time", "seek_before", "span_info", "span_window"]

# [[HH:]MM:]SS[.fraction]; minutes and seconds below 60 once a larger unit is given.
_CLOCK = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


class SpanError(InputError):
    """``--start``/``--duration`` fall outside the video: the command line's fault (exit 2)."""

    exit_code = 2


def parse_time(text: str) -> Fraction:
    """Seconds in ``text`` (``12.5``, ``90``, ``1:02.5``, ``01:02:03.250``), exactly.

    Raises ``ValueError`` with a one-line reason for anything else (negative, empty,
    ``1:75``, ``12s``).
    """
    match = _CLOCK.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time; give seconds (12.5) or [HH:]MM:SS[.ms] (1:02.5)")
    hours, minutes, seconds = match.groups()
    value = Fraction(seconds)
    if minutes is not None:
        if value >= 60 or (hours is not None and int(minutes) >= 60):
            raise ValueError(f"{text!r} is not a time: minutes and seconds go up to 59")
        value += 60 * int(minutes) + 3600 * int(hours or 0)
    return value


@dataclass(frozen=True)
class TimeSpan:
    """``start`` seconds after the video's first frame, for ``duration`` seconds (``None``:
    to the end)."""

    start: Fraction = Fraction(0)
    duration: Fraction | None = None

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"start must be at least 0, not {self.start}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be positive, not {self.duration}")

    def describe(self) -> str:
        end = f"{float(self.start + self.duration):g} s" if self.duration is not None else "the end"
        return f"{float(self.start):g} s to {end}"

    def check(self, name: str, length: float | None) -> None:
        """Raise ``SpanError`` when the span starts at or after the end of a video of
        ``length`` seconds (``None``: unknown, checked when the frames run out)."""
        if length is not None and self.start >= Fraction(length).limit_denominator(10**6):
            raise SpanError(f"--start {float(self.start):g} s is past the end of {name} ({float(length):.3f} s long)")

    def frame_range(self, rate: Fraction, frames: int) -> range:
        """Which of ``frames`` numbered images at ``rate`` fps fall in the span: frame i
        shows at i / rate seconds."""
        first = _ceil(self.start * rate)
        last = frames if self.duration is None else min(frames, _ceil((self.start + self.duration) * rate))
        return range(first, last)


def _ceil(value: Fraction) -> int:
    return -(-value.numerator // value.denominator)


@dataclass(frozen=True)
class Cut:
    """A span on a file's timeline, in seconds of that timeline: ``start`` is where the
    output's time 0 falls (the first video frame kept), ``end`` where it stops (``None``:
    the end of the file)."""

    start: Fraction
    end: Fraction | None

    def place(self, packet: av.Packet) -> bool | None:
        """Move a copied audio or subtitle ``packet`` onto the output's timeline.

        Returns True (keep it, its timestamps now shifted), False (outside the cut: drop
        it) or None (well past the end: nothing more is needed from the file). An audio
        packet is kept when it starts inside the cut; a subtitle when it overlaps it
        (trimmed to the cut).
        """
        tb = packet.time_base
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None or not tb:
            return False
        begins = stamp * tb
        if self.end is not None and begins >= self.end:
            # Streams are interleaved within a second or so: two seconds past, all are done.
            return None if begins >= self.end + 2 else False
        shift = round(self.start / tb)
        if packet.stream.type == "subtitle" and packet.duration:
            ends = (stamp + packet.duration) * tb
            if ends <= self.start:
                return False
            first = max(stamp, shift)
            last = stamp + packet.duration if self.end is None else min(stamp + packet.duration, round(self.end / tb))
            packet.pts = packet.dts = first - shift
            packet.duration = last - first
            return True
        if begins < self.start:
            return False
        packet.pts = stamp - shift
        if packet.dts is not None:
            packet.dts = packet.dts - shift
        return True

    def seek_target(self) -> int:
        """Where to seek a file's demuxer before copying (``av.time_base`` units): a
        second early, so no stream's packets at the cut are skipped."""
        return max(0, int((self.start - 1) * av.time_base))


def span_info(info: VideoInfo, span: TimeSpan) -> VideoInfo:
    """``info`` of the part ``span`` of a video (``SpanError`` when it starts past the end)."""
    span.check(info.path.name, info.duration)
    length = None
    if info.duration is not None:
        length = float(min(Fraction(info.duration).limit_denominator(10**6) - span.start, span.duration or 10**12))
    elif span.duration is not None:
        length = float(span.duration)
    frames = max(1, round(length * info.frame_rate)) if length and info.frame_rate else None
    return replace(info, frames=frames, duration=length, start_time=Fraction(0))


def span_window(span: TimeSpan, info: VideoInfo, tb: Fraction) -> tuple[int, int | None]:
    """The span as ``[first, end)`` timestamps of a stream in ``tb``, on the file's timeline."""
    first = math.ceil((info.start_time + span.start) / tb)
    end = None if span.duration is None else math.ceil((info.start_time + span.start + span.duration) / tb)
    return first, end


def seek_before(container: av.container.InputContainer, stream: Any, timestamp: int) -> None:
    """Seek to the keyframe at or before ``timestamp`` (in ``stream``'s time base); from a
    stream that cannot seek (a pipe, some raw formats) the frames are just read and dropped."""
    if stream.start_time is not None and timestamp <= stream.start_time:
        return
    try:
        container.seek(timestamp, stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OSError, ValueError):
        pass
