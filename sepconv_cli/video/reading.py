"""Decoding a video file into RGB frames, one at a time (``FrameReader``, ``iter_frames``).

Memory holds one decoded frame whatever the video's length; corrupt data is skipped and
reported rather than fatal (see ``FrameReader``).
"""

from __future__ import annotations

import heapq
import threading
import warnings
from collections import deque
from collections.abc import Generator, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from sepconv_cli.errors import InputError
from sepconv_cli.frame_kinds import deinterlaced, input_warnings
from sepconv_cli.timespan import Cut, SpanError, TimeSpan, seek_before, span_info, span_window
from sepconv_cli.video.description import _SWS_FLAGS, VideoWarning, _open_input, _video_stream, probe
from sepconv_cli.video_types import Frame, VideoInfo, is_full_range_fmt


# Frames a decoder may emit before one whose timestamp belongs earlier; B-frame
# pyramids displace labels by at most a few frames. Buffered frames are still YUV.
REORDER_DEPTH = 8


def _in_presentation_order(
    frames: Iterator[av.VideoFrame], depth: int = REORDER_DEPTH
) -> Iterator[tuple[av.VideoFrame, int | None]]:
    """Pair each decoded frame with its presentation timestamp.

    Within a window of ``depth`` frames the smallest pending timestamp goes to the oldest
    pending frame. Correctly labelled streams come out unchanged; streams labelled in
    decode order get their display timestamps back instead of losing their "late" frames.
    """
    pending: deque[av.VideoFrame] = deque()
    stamps: list[int] = []
    for frame in frames:
        if frame.pts is None:
            while pending:
                yield pending.popleft(), heapq.heappop(stamps)
            yield frame, None
            continue
        pending.append(frame)
        heapq.heappush(stamps, frame.pts)
        if len(pending) > depth:
            yield pending.popleft(), heapq.heappop(stamps)
    while pending:
        yield pending.popleft(), heapq.heappop(stamps)


class FrameReader:
    """Iterate over a video's frames as ``Frame`` objects, one decoded frame in memory at a time.

    Decoding uses FFmpeg's automatic (frame + slice) threading. Corrupt or truncated
    data is not fatal: a packet the decoder rejects, or a read error part-way through
    the file, is skipped and counted in ``skipped_packets`` and reported once with a
    ``VideoWarning`` when iteration ends; frames decoded before and after it are still
    yielded. Only when no frame at all decodes does iteration raise ``InputError``.
    Decoders emit frames in presentation order, but some containers label them with
    decode-order timestamps (AVI with B-frames: 1, 2, 3, 5, 4, 6, …); the timestamps of a
    short window are therefore handed out in ascending order (``_in_presentation_order``).
    A frame whose timestamp still does not increase (a duplicate) is dropped (counted in
    ``dropped_frames``); a missing timestamp is filled in from the previous frame.
    Many demuxers treat cut-off data as a normal end of file, so when the frames end
    well before the duration in the file's header a warning says so (``truncated``).
    Frames that change size mid-stream are scaled back to the first frame's size.

    With ``span`` (a ``timespan.TimeSpan``) only that part is read: the demuxer seeks to the
    keyframe before it, frames before it are decoded and dropped, reading stops at its end,
    and the first frame kept is at timestamp 0 (``cut`` then says where it was in the file,
    for copying the audio of the same part). ``info`` then describes the part (its
    duration, an estimated frame count); ``source_info`` the whole file.
    With ``deinterlace``, interlaced video goes through FFmpeg's bwdif filter first; an
    interlaced video read without it, or one with an alpha channel, is reported with a
    ``VideoWarning`` (``input_warnings``).

    Use as a context manager (or call ``close``) to release the file early.
    """

    def __init__(self, path: str | Path, info: VideoInfo | None = None, span: TimeSpan | None = None,
                 deinterlace: bool = False) -> None:
        self.path = Path(path)
        self.deinterlace = deinterlace
        self.source_info = info or probe(path)
        self.info = span_info(self.source_info, span) if span is not None else self.source_info
        self.span = span
        self.cut: Cut | None = None
        self.skipped_packets = 0
        self.dropped_frames = 0
        self.frames_read = 0
        self.frames_decoded = 0  # before any dropping: with a span, what the seek saved shows here
        self.truncated = False
        self.deep = self.info.bit_depth > 8
        self._container: av.container.InputContainer | None = None
        self._reader_thread: int | None = None
        self._reformatter = VideoReformatter()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Closing the demuxer while another thread is inside it (a decode thread the
        # caller stopped waiting for) would free it under that thread's feet; that
        # thread closes it itself when its read returns.
        if self._reader_thread is not None and self._reader_thread != threading.get_ident():
            return
        if self._container is not None:
            self._container.close()
            self._container = None

    def _open(self) -> av.container.InputContainer:
        return _open_input(self.path)

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """Convert a decoded frame to ``(H, W, 3)`` RGB honouring the stream's matrix and range."""
        info = self.info
        rgb = self._reformatter.reformat(
            frame,
            width=info.width,
            height=info.height,
            format="rgb48le" if self.deep else "rgb24",
            src_colorspace=info.matrix,
            src_color_range="JPEG" if (info.full_range or is_full_range_fmt(frame.format.name)) else "MPEG",
            dst_color_range="JPEG",
            interpolation=_SWS_FLAGS,
        )
        return np.ascontiguousarray(rgb.to_ndarray())

    def __iter__(self) -> Iterator[Frame]:
        info = self.info
        self._container = container = self._open()
        self._reader_thread = threading.get_ident()
        stream = _video_stream(container, self.path)
        stream.codec_context.thread_type = "AUTO"
        tb = Fraction(stream.time_base or info.time_base)
        step = round(1 / (info.frame_rate * tb)) if info.frame_rate else 1
        self._first_ts = 0
        window = span_window(self.span, self.source_info, tb) if self.span is not None else None
        if window is not None:
            seek_before(container, stream, window[0])
        for note in input_warnings(info, self.deinterlace):
            warnings.warn(note, VideoWarning, stacklevel=2)
        deinterlace = self.deinterlace and info.interlaced
        try:
            pictures = self._decoded(container, stream)
            if deinterlace:
                pictures = deinterlaced(pictures, stream)
            last_ts, last_duration = yield from self._frames(pictures, tb, step, window)
        finally:
            self.close()
            self._reader_thread = None
        self._check_end(last_ts, last_duration, tb)

    def _decoded(self, container: av.container.InputContainer, stream: Any) -> Iterator[av.VideoFrame]:
        """The stream's pictures in decoder order; a packet the decoder rejects is skipped,
        and a read error ends the stream after flushing what the decoder holds."""
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, EOFError, OSError):
                # Truncated or unreadable data: stop reading, flush what we have.
                self.skipped_packets += 1
                try:
                    yield from stream.decode(None)
                except av.error.FFmpegError:
                    pass
                return
            try:
                for picture in stream.decode(packet):
                    self.frames_decoded += 1
                    yield picture
            except av.error.EOFError:
                return
            except av.error.FFmpegError:
                self.skipped_packets += 1

    def _frames(
        self, pictures: Iterator[av.VideoFrame], tb: Fraction, step: int, window: tuple[int, int | None] | None
    ) -> Generator[Frame, None, tuple[int | None, int | None]]:
        """``Frame`` objects with increasing timestamps (of the span only, moved to start at
        0); returns the last one's timestamp and duration, for the check that the file was
        read to its end. Runs inside ``__iter__``: its warnings name ``__iter__``'s caller."""
        info = self.info
        last_ts: int | None = None
        last_duration: int | None = None
        resized_warned = False
        origin = 0  # the kept part's first timestamp: time 0 of the output (0: whole file)
        for vf, ts in _in_presentation_order(pictures):
            if ts is None:
                ts = (0 if last_ts is None else last_ts + max(1, step)) + origin
            if window is not None:
                if ts < window[0]:
                    continue
                if window[1] is not None and ts >= window[1]:
                    break
                if last_ts is None:
                    origin = ts
                    self.cut = Cut(Fraction(ts * tb), window[1] * tb if window[1] is not None else None)
                ts -= origin
            if last_ts is not None and ts <= last_ts:
                self.dropped_frames += 1
                continue
            if (vf.width, vf.height) != (info.width, info.height) and not resized_warned:
                resized_warned = True
                warnings.warn(
                    f"{self.path.name}: frame size changes to {vf.width}x{vf.height} at frame "
                    f"{self.frames_read}; scaling back to {info.width}x{info.height}",
                    VideoWarning,
                    stacklevel=3,
                )
            if last_ts is None:
                self._first_ts = ts
            last_ts = ts
            duration = vf.duration if vf.duration and vf.duration > 0 else None
            last_duration = duration
            frame = Frame(
                rgb=self.to_rgb(vf),
                pts=ts * tb,
                index=self.frames_read,
                timestamp=ts,
                duration=duration,
                source=vf,
            )
            self.frames_read += 1
            yield frame
        return last_ts, last_duration

    def _check_end(self, last_ts: int | None, last_duration: int | None, tb: Fraction) -> None:
        """Once the frames end: warn of what was skipped or is missing at the end, and fail
        if nothing decoded. Called by ``__iter__``: its warnings name ``__iter__``'s caller."""
        info = self.info
        if self.skipped_packets or self.dropped_frames:
            parts = []
            if self.skipped_packets:
                parts.append(f"skipped {self.skipped_packets} corrupt or unreadable packet(s)")
            if self.dropped_frames:
                parts.append(f"dropped {self.dropped_frames} frame(s) with duplicate timestamps")
            warnings.warn(
                f"{self.path.name}: {' and '.join(parts)}; {self.frames_read} frame(s) decoded",
                VideoWarning,
                stacklevel=3,
            )
        if self.frames_read and info.duration:
            # Demuxers often treat cut-off data as a normal end of file: compare with
            # the duration the headers promised and say so if much is missing.
            frame_s = float(1 / info.frame_rate) if info.frame_rate else 0.04
            covered = float((last_ts - self._first_ts) * tb) + (float(last_duration * tb) if last_duration else frame_s)
            missing = info.duration - float(info.start_time) - covered
            if missing > max(3 * frame_s, 0.05 * info.duration):
                self.truncated = True
                warnings.warn(
                    f"{self.path.name}: video stops at {covered:.2f} s of the {info.duration:.2f} s its "
                    f"header promises (truncated or corrupt file?)",
                    VideoWarning,
                    stacklevel=3,
                )
        if self.frames_read == 0 and self.span is not None and not self.skipped_packets:
            raise SpanError(f"no video frames from {self.span.describe()} in {self.path.name}")
        if self.frames_read == 0:
            raise InputError(
                f"no decodable video frames in {self.path}"
                + (f" ({self.skipped_packets} corrupt packet(s))" if self.skipped_packets else "")
            )


def iter_frames(path: str | Path) -> Iterator[Frame]:
    """Yield ``path``'s video frames in presentation order; see ``FrameReader`` for the
    handling of corrupt data (skip and warn; ``InputError`` only if nothing decodes)."""
    with FrameReader(path) as reader:
        yield from reader

