"""Streaming video input and output with PyAV, independent of any model.

Reading (``probe``, ``iter_frames``, ``FrameReader``) turns the first video stream of a
file into RGB numpy frames one at a time, so memory does not grow with the video's
length. Writing (``VideoWriter``) encodes RGB frames (or decoded frames passed through
untouched) with libx264 by default (``default_codec``: VP9 in WebM, MPEG-2 in MPEG-PS,
raw in y4m), keeps the input's pixel format, colour tags and rotation where the codec
allows (RGB input as 4:4:4), and copies the input's audio and subtitle streams
packet by packet, interleaved with the video by timestamp.

Nothing here prints or exits: bad input raises ``InputError``, output problems
``OutputError`` (one-line messages), and recoverable problems are reported with
``warnings.warn(..., VideoWarning)``.

Colour conversion: YUV is converted to RGB (and back) with the stream's own matrix
and range. Untagged streams are taken to be BT.709 when at least 720 rows (or 1280
columns) tall and BT.601 below, as most players do, and limited ("tv") range unless
the pixel format is a full-range ``yuvj*`` one. Transfer and primaries are never
converted, only carried over as tags.
"""

from __future__ import annotations

import heapq
import io
import re
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.frame_kinds import deinterlaced, field_order, has_alpha, input_warnings
from sepconv_cli.timespan import Cut, SpanError, TimeSpan, seek_before, span_info, span_window
# Frame and VideoInfo live in video_types, below frame_kinds and timespan, which need
# VideoInfo too; imported here so that `from sepconv_cli.video import Frame, VideoInfo`
# keeps working for library users (the project's own modules import video_types).
from sepconv_cli.video_types import Frame, VideoInfo, is_full_range_fmt

__all__ = [
    "Frame",
    "FrameReader",
    "PIPE_FORMATS",
    "Pipe",
    "PipeReader",
    "VideoInfo",
    "VideoWarning",
    "VideoWriter",
    "choose_pix_fmt",
    "default_codec",
    "quality_options",
    "iter_frames",
    "probe",
    "y4m_pix_fmt",
]


class VideoWarning(UserWarning):
    """Something in a video was skipped, dropped or re-encoded; the output is still usable."""


_SWS_FLAGS = (
    Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
)
# y4m's chroma tags (the decoder's reading of them; a bare "C420" is JPEG's siting).
_Y4M_CHROMA = {b"420jpeg": "center", b"420": "center", b"420mpeg2": "left", b"420paldv": "topleft"}
# Codecs that encode 4:2:0 at odd sizes. is known to reject 4:2:0 at odd sizes in the common encoders.
_ODD_SIZE_OK = {"ffv1"}
# Lossless encoders: RGB in stays RGB, bit for bit.
_LOSSLESS = {"ffv1"}


def _bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        bits = max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, av.error.FFmpegError):
        return 8
    return 8 if bits <= 8 else 10 if bits <= 10 else 12 if bits <= 12 else 16


def _is_rgb_fmt(pix_fmt: str | None) -> bool:
    if not pix_fmt:
        return False
    try:
        return av.VideoFormat(pix_fmt).is_rgb
    except (ValueError, av.error.FFmpegError):
        return False


def _open_input(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input video not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a video file: {path}")
    try:
        return av.open(str(path), "r")
    except av.error.PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(
            f"not a video FFmpeg can read: {path} ({reason}; is it truncated or not a video?)"
        ) from None


def _video_stream(container: av.container.InputContainer, path: str | Path):
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue  # cover art, not the video
        return stream
    raise InputError(f"no video stream in {path} (audio-only or data file?)")


def probe(path: str | Path) -> VideoInfo:
    """Describe ``path``'s first video stream; raises ``InputError`` if there is none.

    Decodes at most the first frame (for the rotation, which FFmpeg exports as frame
    side data); everything else comes from the container headers.
    """
    container = _open_input(path)
    with container:
        header = b""
        if container.format.name == "yuv4mpegpipe":
            try:
                with open(path, "rb") as handle:
                    header = handle.read(_Y4M_HEADER_MAX)
            except OSError:
                pass
        return _describe(container, path, decode_first=True, header=header)


# A y4m stream header is one line of a few dozen bytes; FFmpeg reads at most 256.
_Y4M_HEADER_MAX = 256


def _y4m_chroma(header: bytes) -> str | None:
    """The chroma siting a y4m stream header states (``C420mpeg2`` → "left"), or None."""
    line = header.split(b"\n", 1)[0]
    if not line.startswith(b"YUV4MPEG2"):
        return None
    for token in line.split(b" ")[1:]:
        if token.startswith(b"C"):
            return _Y4M_CHROMA.get(token[1:])  # deeper 4:2:0 (C420p10) has no siting tag
    return "center"  # no C tag: 4:2:0 with JPEG siting, by the format's definition


def _tag_seconds(tag: str) -> float | None:
    """A Matroska ``DURATION`` tag (``HH:MM:SS.fffffffff``) in seconds; None if it is not one."""
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", tag.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _describe(
    container: av.container.InputContainer, path: str | Path, *, decode_first: bool, header: bytes = b""
) -> VideoInfo:
    """``VideoInfo`` of an open container; ``decode_first`` reads the rotation from the
    first frame, which a pipe cannot afford (its bytes could not be read again).
    ``header``: the stream's first bytes, where a y4m file states its chroma siting."""
    stream = _video_stream(container, path)
    ctx = stream.codec_context
    tb = stream.time_base or Fraction(1, 90000)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(0)
    track_end = _tag_seconds(stream.metadata.get("DURATION", ""))
    if stream.duration:
        duration = float(stream.duration * tb)
    elif track_end is not None:
        # Matroska has no stream duration but tags each track with where it ends; the
        # container's duration is the longest track's, often the audio's.
        duration = track_end
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = None
    pix_fmt = ctx.pix_fmt or ""
    rotation = 0
    interlaced_frame = False
    if decode_first:
        try:
            stream.codec_context.thread_type = "AUTO"
            for packet in container.demux(stream):
                got = stream.decode(packet)
                if got:
                    rotation = int(round(got[0].rotation or 0))
                    pix_fmt = pix_fmt or got[0].format.name
                    interlaced_frame = bool(got[0].interlaced_frame)
                    break
        except (av.error.FFmpegError, EOFError):
            pass
    start = Fraction(stream.start_time * tb) if stream.start_time is not None else Fraction(0)
    return VideoInfo(
        path=Path(path),
        width=ctx.width,
        height=ctx.height,
        frame_rate=Fraction(rate),
        time_base=Fraction(tb),
        frames=stream.frames or None,
        duration=duration,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(pix_fmt),
        codec=ctx.name,
        color_range=int(ctx.color_range or 0),
        colorspace=int(ctx.colorspace if ctx.colorspace is not None else 2),
        color_primaries=int(ctx.color_primaries if ctx.color_primaries is not None else 2),
        color_trc=int(ctx.color_trc if ctx.color_trc is not None else 2),
        rotation=rotation % 360,
        audio_streams=len(container.streams.audio),
        subtitle_streams=len(container.streams.subtitles),
        start_time=start,
        chroma_siting=_y4m_chroma(header) if container.format.name == "yuv4mpegpipe" else None,
        field_order=field_order(ctx, interlaced_frame),
        alpha=has_alpha(pix_fmt) or stream.metadata.get("alpha_mode") == "1",
    )


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
        last_ts: int | None = None
        last_duration: int | None = None
        self._first_ts = 0
        resized_warned = False
        origin = 0  # the kept part's first timestamp: time 0 of the output (0: whole file)
        window = span_window(self.span, self.source_info, tb) if self.span is not None else None
        if window is not None:
            seek_before(container, stream, window[0])
        for note in input_warnings(info, self.deinterlace):
            warnings.warn(note, VideoWarning, stacklevel=2)
        deinterlace = self.deinterlace and info.interlaced

        def decoded() -> Iterator[av.VideoFrame]:
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

        try:
            pictures = deinterlaced(decoded(), stream) if deinterlace else decoded()
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
                        stacklevel=2,
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
        finally:
            self.close()
            self._reader_thread = None
        if self.skipped_packets or self.dropped_frames:
            parts = []
            if self.skipped_packets:
                parts.append(f"skipped {self.skipped_packets} corrupt or unreadable packet(s)")
            if self.dropped_frames:
                parts.append(f"dropped {self.dropped_frames} frame(s) with duplicate timestamps")
            warnings.warn(
                f"{self.path.name}: {' and '.join(parts)}; {self.frames_read} frame(s) decoded",
                VideoWarning,
                stacklevel=2,
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
                    stacklevel=2,
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


# ``--format`` names for pipes → FFmpeg's muxer names. y4m carries raw YUV (and grey),
# NUT any codec; both are what ``ffmpeg -f yuv4mpegpipe -`` / ``-f nut -`` read and write.
PIPE_FORMATS = {"y4m": "yuv4mpegpipe", "nut": "nut"}
# Pixel formats the yuv4mpegpipe muxer accepts (FFmpeg's yuv4mpegenc.c).
Y4M_PIX_FMTS = frozenset({
    "gray", "gray9le", "gray10le", "gray12le", "gray16le", "yuv411p", "yuv420p", "yuv422p", "yuv444p",
    "yuv420p9le", "yuv422p9le", "yuv444p9le", "yuv420p10le", "yuv422p10le", "yuv444p10le",
    "yuv420p12le", "yuv422p12le", "yuv444p12le", "yuv420p14le", "yuv422p14le", "yuv444p14le",
    "yuv420p16le", "yuv422p16le", "yuv444p16le",
})


def y4m_pix_fmt(template: VideoInfo) -> str:
    """What a y4m stream of ``template``'s frames holds: its own format where y4m has it
    (YUV and grey only), else 4:4:4 (RGB in: no chroma lost)."""
    source = "yuv" + template.pix_fmt[4:] if template.pix_fmt.startswith("yuvj") else template.pix_fmt
    return source if source in Y4M_PIX_FMTS else ("yuv444p16le" if template.bit_depth > 8 else "yuv444p")


@dataclass(frozen=True)
class Pipe:
    """A byte stream (stdin, stdout, a socket) instead of a file.

    ``file``: a binary file object, read or written strictly in order (it need not
    seek). ``format``: FFmpeg's (de)muxer name, e.g. ``"yuv4mpegpipe"`` or ``"nut"``
    (``PIPE_FORMATS``); for reading, ``None`` lets FFmpeg recognise the stream.
    ``name``: how messages call it.
    """

    file: Any
    format: str | None = None
    name: str = "-"


def _read_header(file: Any) -> bytes:
    """The first bytes of a stream: its whole first line if it is y4m, else a few bytes."""
    magic = b"YUV4MPEG2"
    head = b""
    while len(head) < len(magic):
        chunk = file.read(len(magic) - len(head))
        if not chunk:
            return head
        head += chunk
    if head != magic:
        return head
    while not head.endswith(b"\n") and len(head) < _Y4M_HEADER_MAX:
        chunk = file.read(1)
        if not chunk:
            break
        head += chunk
    return head


class _Replayed(io.RawIOBase):
    """A read-once stream with ``prefix`` (bytes already taken from it) put back in front."""

    def __init__(self, prefix: bytes, file: Any) -> None:
        self._prefix = prefix
        self._file = file

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            n = len(self._prefix) if size is None or size < 0 else size
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            return out
        return self._file.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class PipeReader(FrameReader):
    """``FrameReader`` over a ``Pipe``: the stream is opened once and read once, so the
    description comes from its headers alone (no rotation) and no frame is decoded
    twice. Audio and subtitles in it are not read (``VideoWriter`` cannot copy them
    from a stream already consumed)."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        # The y4m header's chroma siting is not exposed by PyAV: read the header line
        # here and hand FFmpeg the same bytes again in front of the rest of the stream.
        header = _read_header(pipe.file)
        try:
            container = av.open(_Replayed(header, pipe.file), "r", format=pipe.format)
        except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InputError(
                f"the input stream {pipe.name} is not video FFmpeg can read ({reason}); send yuv4mpegpipe or NUT, "
                "e.g. ffmpeg -i in.mkv -f yuv4mpegpipe -"
            ) from None
        try:
            info = _describe(container, pipe.name, decode_first=False, header=header)
        except BaseException:
            container.close()
            raise
        super().__init__(pipe.name, info)
        self._opened: av.container.InputContainer | None = container

    def _open(self) -> av.container.InputContainer:
        if self._opened is None:
            raise InputError(f"the input stream {self.pipe.name} can be read only once")
        container, self._opened = self._opened, None
        return container

    def close(self) -> None:
        if self._opened is not None:  # never iterated
            self._opened.close()
            self._opened = None
        super().close()


def choose_pix_fmt(codec: str, source_pix_fmt: str | None, bit_depth: int, width: int, height: int) -> str:
    """The pixel format ``codec`` should encode to, keeping ``source_pix_fmt`` where possible.

    Falls back to 4:2:0 at the source's bit depth (or the nearest deeper one the codec
    has), and to 4:4:4 when the size is odd and the codec cannot subsample it (only
    FFV1 encodes 4:2:0 at odd sizes). RGB in (libx264rgb video, image sequences) keeps
    its full chroma: 4:4:4 YUV in a lossy codec that has it, RGB itself in FFV1 and in
    RGB-only encoders (libx264rgb), and 4:2:0 only in codecs that have neither.
    """
    try:
        formats = [f.name for f in (av.Codec(codec, "w").video_formats or ())]
    except (ValueError, av.error.FFmpegError):
        raise OutputError(f"unknown video encoder {codec!r}") from None
    src = source_pix_fmt or ""
    if src.startswith("yuvj"):
        src = "yuv" + src[4:]  # deprecated full-range aliases; the range is a tag instead
    odd = width % 2 or height % 2

    def fits(name: str) -> bool:
        if not odd or codec in _ODD_SIZE_OK:
            return True
        fmt = av.VideoFormat(name, width, height)
        return fmt.chroma_width(width) == width and fmt.chroma_height(height) == height

    if not formats:
        return src or "yuv420p"
    rgb = _is_rgb_fmt(src)
    depths = [d for d in (8, 9, 10, 12, 14, 16) if d >= bit_depth] + [d for d in (16, 14, 12, 10, 9, 8) if d < bit_depth]
    if rgb and codec not in _LOSSLESS:
        # RGB into a lossy YUV codec: 4:4:4, which keeps the chroma and plays more widely
        # than the codec's RGB mode (VP9's gbrp, x265's gbrp).
        for depth in depths:
            name = "yuv444p" if depth == 8 else f"yuv444p{depth}le"
            if name in formats:
                return name
    if src in formats and fits(src):
        return src
    if rgb:
        # RGB in (image sequences): an RGB format of the same depth where the codec has one
        # (FFV1: bgr0, gbrp16le), so lossless output keeps the frames exactly.
        for name in (("gbrp16le", "rgb48le") if bit_depth > 8 else ("gbrp", "bgr0")):
            if name in formats:
                return name
    if odd and codec not in _ODD_SIZE_OK:
        chromas: tuple[str, ...] = ("444",)
    elif rgb:
        chromas = ("444", "420", "422")  # RGB has full chroma: keep it where the codec can
    else:
        chromas = ("420", "422", "444")
    for chroma in chromas:
        for depth in depths:
            name = f"yuv{chroma}p" if depth == 8 else f"yuv{chroma}p{depth}le"
            if name in formats and fits(name):
                return name
    usable = [f for f in formats if fits(f)]
    return (usable or formats)[0]


# Encoders that store a frame rate instead of timestamps (their time base must be 1/rate).
_RATE_ONLY = frozenset({"mpeg1video", "mpeg2video"})
# Muxers whose codec query knows only their default codec, though they hold these too
# (what ``ffmpeg -c:v mpeg2video out.mpg`` or ``-c:v libx264 out.ts`` write).
_ALSO_HOLDS = {
    "mpeg": {"mpeg2video", "h264"},
    "vob": {"mpeg2video", "h264"},
    "mpegts": {"h264", "hevc", "mpeg2video", "mpeg1video"},
}
# Encoders tried, in order, for a container when --codec is not given: H.264 wherever it
# fits; VP9 (WebM); MPEG-2 (MPEG-PS .mpg/.vob, MXF). MPEG-PS is what DVD tools and old
# players expect of an .mpg, so it gets MPEG-2 although it could hold H.264.
_DEFAULT_CODECS = ("libx264", "libvpx-vp9", "libsvtav1", "mpeg2video", "mpeg4")
_PREFERRED = {"yuv4mpegpipe": "rawvideo", "mpeg": "mpeg2video", "vob": "mpeg2video", "dvd": "mpeg2video", "svcd": "mpeg2video"}


def _container_codec_ok(container: av.container.OutputContainer, codec: str) -> bool:
    if codec in _ALSO_HOLDS.get(container.format.name, ()):
        return True
    try:
        return codec in container.supported_codecs
    except Exception:  # noqa: BLE001 - older PyAV: assume yes, the muxer will say otherwise
        return True


def _encoder_exists(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except (ValueError, av.error.FFmpegError):
        return False
    return True


def default_codec(container: av.container.OutputContainer) -> str:
    """The video encoder used when none is asked for: libx264 where the container holds
    H.264, else the first of VP9, AV1, MPEG-2 and MPEG-4 it holds (``_DEFAULT_CODECS``);
    MPEG-2 for MPEG program streams. ``OutputError`` if none fits."""
    name = container.format.name
    candidates = [_PREFERRED[name]] if name in _PREFERRED else []
    if name == "yuv4mpegpipe":
        return "rawvideo"  # raw frames are all it holds
    for codec in (*candidates, *_DEFAULT_CODECS):
        if _encoder_exists(codec) and _container_codec_ok(container, av.Codec(codec, "w").canonical_name):
            return codec
    raise OutputError(f"no video encoder of this FFmpeg fits a {name} file; use .mkv or .mp4")


# x264/x265's presets mapped onto libvpx's cpu-used (0 slowest … 5 fastest with deadline=good).
_VPX_SPEED = {"ultrafast": 5, "superfast": 5, "veryfast": 4, "faster": 4, "fast": 3, "medium": 2,
              "slow": 1, "slower": 1, "veryslow": 0, "placebo": 0}


def quality_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    """Encoder options for x264's ``crf``/``preset`` scale, translated for other encoders.

    VP9's and MPEG-2's numbers come from ``benchmarks/crf_equivalence.py``: the setting
    whose PSNR on natural footage matches libx264's at the same ``crf``.
    """
    if codec in ("libx264", "libx265"):
        options = {"crf": str(crf), "preset": preset}
        if codec == "libx265":
            options["x265-params"] = "log-level=error"
        return options
    if codec == "libvpx-vp9":
        # b=0 makes crf a constant-quality target rather than a cap on a default bitrate.
        return {"crf": str(vp9_crf(crf)), "b": "0", "deadline": "good",
                "cpu-used": str(_VPX_SPEED.get(preset, 2)), "row-mt": "1"}
    if codec in ("mpeg2video", "mpeg1video", "mpeg4"):
        # A constant quantiser: ffmpeg's -q:v works through each frame's quality field,
        # which PyAV does not set, so the rate control's range is pinned to it instead.
        q = str(mpeg_qscale(crf))
        return {"qmin": q, "qmax": q}
    return {}


# Fitted by benchmarks/crf_equivalence.py (the same PSNR as libx264 at that crf; see
# docs/encoders.md): VP9's crf is linear in x264's, MPEG-2's quantiser exponential (x264's
# crf is a logarithm of its quantiser step).
VP9_CRF_AT_0, VP9_CRF_SLOPE = -7.55, 1.90
MPEG_Q_CRF_AT_1, MPEG_Q_CRF_PER_DOUBLING = 9.1, 6.7


def vp9_crf(crf: int) -> int:
    """libvpx-vp9's crf (0-63) giving about the quality of libx264's ``crf`` (0-51): 18 → 27."""
    return max(0, min(63, round(VP9_CRF_AT_0 + VP9_CRF_SLOPE * crf)))


def mpeg_qscale(crf: int) -> int:
    """MPEG-2's quantiser (1-31) giving about the quality of libx264's ``crf``: 18 → 3."""
    return max(1, min(31, round(2 ** ((crf - MPEG_Q_CRF_AT_1) / MPEG_Q_CRF_PER_DOUBLING))))


class VideoWriter:
    """Encode RGB frames to ``path``, carrying over ``template``'s streams and tags.

    ``template`` (usually ``probe(input)``) gives the size, pixel format (kept where
    ``codec`` allows it: 10-bit in gives yuv420p10le out with libx264/libx265/ffv1),
    colour tags, rotation and the file whose audio and subtitle streams are copied
    (``copy_streams=True``). Audio is copied without re-encoding; only a codec the
    output container cannot hold is re-encoded (to AAC, or the container's default),
    with a ``VideoWarning``. Subtitles the container cannot hold are dropped with a
    warning, as are data and attachment streams. Copied packets are read from a second
    demuxer of the source as the video advances, so audio is interleaved with video by
    timestamp and never buffered whole.

    ``time_base`` (default: the template's) is the unit of the integer ``pts`` passed to
    ``write``; ``rate`` (default: the template's) is the nominal frame rate given to the
    encoder. ``codec`` ``None`` picks the container's usual encoder (``default_codec``), and
    ``codec_chosen`` then says so; ``crf``/``preset`` are on x264's scale, translated for VP9
    and MPEG-2 (``quality_options``). ``lossless=True`` encodes FFV1 and needs a ``.mkv`` path. ``file`` (a binary
    file object, e.g. stdout) and ``format`` (FFmpeg's muxer name, e.g. ``"nut"``) write a
    stream instead of ``path``, which then only names it in messages. ``cut`` (from a
    ``FrameReader`` given a span) copies only that part of the audio and subtitles, moved
    to start where the video does (``timespan.Cut.place``).

    Use as a context manager: a normal exit flushes the encoder and the remaining
    audio and writes the trailer; an exception closes the file without finishing it
    (the caller deletes it).
    """

    def __init__(
        self,
        path: str | Path,
        template: VideoInfo,
        *,
        rate: Fraction | None = None,
        time_base: Fraction | None = None,
        codec: str | None = None,
        crf: int = 18,
        preset: str = "medium",
        lossless: bool = False,
        codec_options: dict[str, str] | None = None,
        copy_streams: bool = True,
        pix_fmt: str | None = None,
        display_name: str | None = None,
        file: Any = None,
        format: str | None = None,
        cut: Cut | None = None,
    ) -> None:
        self.path = Path(path)
        self._cut = cut
        self.name = display_name or self.path.name  # in messages (e.g. the final name of a temp file)
        self.template = template
        self.time_base = Fraction(time_base or template.time_base)
        self.rate = Fraction(rate or template.frame_rate or 25)
        self.frames_written = 0
        self.audio_copied = 0
        self.audio_reencoded = 0
        self.subtitles_copied = 0
        self.streams_dropped = 0
        self._durations: dict[int, int] = {}
        self._side: av.container.InputContainer | None = None
        self._side_packets: Iterator[av.Packet] | None = None
        self._pending: av.Packet | None = None
        self._stream_map: dict[int, Any] = {}
        self._decoders: dict[int, Any] = {}
        self._audio_next: dict[int, int] = {}
        self._closed = False
        self._reformatter = VideoReformatter()

        if lossless:
            codec = "ffv1"
            if file is None and self.path.suffix.lower() != ".mkv":
                raise OutputError(f"lossless output (FFV1) needs a .mkv file, not {self.name}")
        rgb_in = _is_rgb_fmt(template.pix_fmt)
        # RGB in, YUV out: limited range (the usual for video), BT.709 or 601 by size
        # unless the source names its matrix; an RGB stream's own tags describe no YUV.
        self.full_range = template.full_range and not rgb_in
        self._colorspace = template.colorspace
        if rgb_in and template.colorspace in (0, 2):
            self._colorspace = 1 if template.matrix == "ITU709" else 6
        self._color_range = 2 if self.full_range else (1 if rgb_in else template.color_range or 0)

        try:
            # A file object (a pipe) has no name to guess the format from: ``format`` says it.
            self._out = av.open(file, "w", format=format) if file is not None else av.open(str(self.path), "w", format=format)
        except av.error.PermissionError:
            raise OutputError(f"cannot write {self.name}: permission denied") from None
        except (av.error.FFmpegError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise OutputError(
                f"cannot create {self.name}: {reason} (use a .mp4, .mkv or .mov name)"
            ) from None
        try:
            # None: the container's usual encoder (libx264 wherever H.264 fits).
            self.codec_chosen = codec is None
            self.codec = codec or default_codec(self._out)
            if pix_fmt is None and self._out.format.name == "yuv4mpegpipe":
                pix_fmt = y4m_pix_fmt(template)
            self.pix_fmt = pix_fmt or choose_pix_fmt(
                self.codec, template.pix_fmt, template.bit_depth, template.width, template.height
            )
            # y4m stores no timestamps: its header's rate is the stream's time base (any
            # other would be read back as that many frames per second); MPEG-1/2 encode
            # only a rate, also taken from the time base. Their frames are numbered
            # 0, 1, 2… (from the first frame's time) in units of 1/rate.
            self._numbered = self._out.format.name == "yuv4mpegpipe" or self.codec in _RATE_ONLY
            self._stream_time_base = 1 / self.rate if self._numbered else self.time_base
            self._first_number: int | None = None
            self._setup_video(crf, preset, codec_options or {})
            if copy_streams:
                self._setup_copies()
            # Open the encoders and write the header now, so a bad combination fails
            # before any decoding work rather than at the first frame.
            self._out.start_encoding()
        except av.error.FFmpegError as exc:
            self.abort()
            if any(name in (codec or "") for name in ("nvenc", "qsv", "vaapi", "videotoolbox", "amf")):
                # FFmpeg's own message for a missing device is an opaque errno.
                raise OutputError(
                    f"cannot start the hardware encoder {codec} for {self.name}: it needs the matching GPU and "
                    f"driver on this machine ({exc}); use a software encoder such as libx264"
                ) from None
            raise OutputError(f"cannot start writing {self.name}: {exc}") from None
        except BaseException:
            self.abort()
            raise

    # -- setup ---------------------------------------------------------------------

    def _setup_video(self, crf: int, preset: str, codec_options: dict[str, str]) -> None:
        t = self.template
        try:
            canonical = av.Codec(self.codec, "w").canonical_name
        except (ValueError, av.error.FFmpegError):
            raise OutputError(f"unknown video encoder {self.codec!r}") from None
        # The y4m muxer lists only wrapped_avframe, but takes rawvideo too (as ffmpeg -c:v rawvideo does).
        raw_y4m = self._out.format.name == "yuv4mpegpipe" and canonical == "rawvideo"
        if not raw_y4m and not _container_codec_ok(self._out, canonical):
            raise OutputError(
                f"a {self.path.suffix or 'this'} file cannot hold {self.codec} video; use .mkv or .mp4, "
                f"or leave out --codec for the container's usual one ({default_codec(self._out)})"
            )
        if self.pix_fmt != t.pix_fmt and t.pix_fmt and not (
            t.pix_fmt.startswith("yuvj") and self.pix_fmt == "yuv" + t.pix_fmt[4:]
        ):
            if (t.width % 2 or t.height % 2) and "444" in self.pix_fmt:
                warnings.warn(
                    f"{t.width}x{t.height} is odd-sized, which {self.codec} cannot encode as 4:2:0; "
                    f"writing {self.pix_fmt} (full chroma), which some players cannot play",
                    VideoWarning,
                    stacklevel=3,
                )
        options = quality_options(self.codec, crf, preset)
        if t.chroma_location and av.VideoFormat(self.pix_fmt).chroma_width(64) < 64:
            options["chroma_sample_location"] = t.chroma_location
        options.update({k: str(v) for k, v in codec_options.items()})
        try:
            vs = self._out.add_stream(self.codec, rate=self.rate)
        except (ValueError, av.error.FFmpegError) as exc:
            raise OutputError(f"cannot encode {self.codec} into {self.path.suffix or 'this'} file: {exc}") from None
        vs.width, vs.height = t.width, t.height
        vs.pix_fmt = self.pix_fmt
        vs.codec_context.time_base = self._stream_time_base
        vs.time_base = self._stream_time_base
        vs.options = options
        ctx = vs.codec_context
        ctx.thread_type = "AUTO"
        if not _is_rgb_fmt(self.pix_fmt):
            ctx.color_range = self._color_range
            ctx.colorspace = self._colorspace
        ctx.color_primaries = t.color_primaries
        ctx.color_trc = t.color_trc
        if t.rotation:
            vs.set_display_rotation(t.rotation)
        self._video = vs

    def _setup_copies(self) -> None:
        t = self.template
        self._side = side = _open_input(t.path)
        selected = []
        video_used = False
        for s in side.streams:
            if s.type == "video" and not video_used and not (s.disposition & av.stream.Disposition.attached_pic):
                video_used = True
                continue
            if s.type == "audio":
                if self._can_copy(s):
                    out_s = self._out.add_stream_from_template(s)
                    self.audio_copied += 1
                else:
                    out_s = self._reencoder(s)
                    if out_s is None:
                        self.streams_dropped += 1
                        continue
                    self.audio_reencoded += 1
                    self._decoders[s.index] = s
                selected.append(s)
                self._stream_map[s.index] = out_s
            elif s.type == "subtitle":
                if self._can_copy(s):
                    out_s = self._out.add_stream_from_template(s)
                else:
                    self.streams_dropped += 1
                    warnings.warn(
                        f"dropped subtitle stream #{s.index} ({s.codec_context.name if s.codec_context else '?'}): "
                        f"a {self.path.suffix} file cannot hold it (use .mkv to keep it)",
                        VideoWarning,
                        stacklevel=4,
                    )
                    continue
                self.subtitles_copied += 1
                selected.append(s)
                self._stream_map[s.index] = out_s
            else:
                self.streams_dropped += 1
                warnings.warn(
                    f"not copying {s.type} stream #{s.index} of {t.path.name}", VideoWarning, stacklevel=4
                )
        if selected:
            if self._cut is not None and self._cut.seek_target() > 0:
                try:
                    side.seek(self._cut.seek_target(), backward=True)
                except (av.error.FFmpegError, OSError, ValueError):
                    pass  # not seekable: the packets before the cut are read and dropped
            self._side_packets = side.demux(*selected)
        else:
            side.close()
            self._side = None

    def _can_copy(self, s: Any) -> bool:
        """Whether the output's muxer accepts stream ``s`` as is.

        The codec tables FFmpeg answers queries from are optimistic (MOV claims FLAC
        but refuses it in the header), so this writes a header with just that stream
        to memory in the same format.
        """
        try:
            with av.open(io.BytesIO(), "w", format=self._out.format.name) as scratch:
                scratch.add_stream_from_template(s)
                scratch.start_encoding()
        except (ValueError, av.error.FFmpegError):
            return False
        except Exception:  # noqa: BLE001 - e.g. a trailer that cannot be written: header was fine
            return True
        return True

    def _reencoder(self, s: Any) -> Any:
        name = "aac" if _container_codec_ok(self._out, "aac") else self._out.default_audio_codec
        src_name = s.codec_context.name if s.codec_context else "?"
        try:
            enc = self._out.add_stream(name, rate=s.codec_context.sample_rate)
            # Demuxers may report only a channel count ("1 channels"); encoders want a layout.
            layout = s.codec_context.layout
            if layout.name.endswith("channels"):
                n = layout.nb_channels
                layout = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}.get(n, layout)
            enc.layout = layout
            formats = [f.name for f in (enc.codec_context.codec.audio_formats or ())]
            if formats:
                enc.format = formats[0]
        except (ValueError, av.error.FFmpegError):
            warnings.warn(
                f"dropped audio stream #{s.index} ({src_name}): a {self.path.suffix} file cannot hold it",
                VideoWarning,
                stacklevel=5,
            )
            return None
        warnings.warn(
            f"audio stream #{s.index} ({src_name}) cannot go into a {self.path.suffix} file as is; "
            f"re-encoding it to {name} (use .mkv to copy it untouched)",
            VideoWarning,
            stacklevel=5,
        )
        return enc

    # -- copied streams --------------------------------------------------------------

    def _mux_copied(self, packet: av.Packet) -> None:
        out_s = self._stream_map[packet.stream.index]
        if packet.stream.index in self._decoders:
            src = self._decoders[packet.stream.index]
            try:
                for frame in src.decode(packet):
                    self._encode_audio(packet.stream.index, frame)
            except av.error.FFmpegError:
                pass
            return
        packet.stream = out_s
        self._out.mux(packet)

    def _encode_audio(self, index: int, frame: av.AudioFrame) -> None:
        """Re-encode one decoded audio frame, numbering samples continuously from the
        first frame's timestamp (container timestamps may be rounded, e.g. to ms)."""
        rate = frame.sample_rate
        if index not in self._audio_next:
            start = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else 0
            self._audio_next[index] = round(start * rate)
        frame.pts = self._audio_next[index]
        frame.time_base = Fraction(1, rate)
        self._audio_next[index] += frame.samples
        self._out.mux(self._stream_map[index].encode(frame))

    def _pump(self, until: Fraction | None) -> None:
        """Mux copied packets whose timestamp is at or before ``until`` seconds (all if None)."""
        if self._side_packets is None:
            return
        while True:
            if self._pending is None:
                try:
                    packet = next(self._side_packets)
                except StopIteration:
                    self._side_packets = None
                    return
                except (av.error.FFmpegError, EOFError, OSError):
                    self._side_packets = None  # truncated source: keep what was copied
                    return
                if packet.dts is None or packet.size == 0:
                    continue
                if self._cut is not None:
                    placed = self._cut.place(packet)
                    if placed is None:
                        self._side_packets = None  # past the cut: the rest of the file is not needed
                        return
                    if not placed:
                        continue
                self._pending = packet
            packet = self._pending
            if until is not None and packet.dts * packet.time_base > until:
                return
            self._pending = None
            self._mux_copied(packet)

    # -- video -----------------------------------------------------------------------

    def _to_video_frame(self, image: np.ndarray | av.VideoFrame) -> av.VideoFrame:
        t = self.template
        yuv_range = "JPEG" if self.full_range else "MPEG"
        if isinstance(image, av.VideoFrame):
            src_range = "JPEG" if (t.full_range or is_full_range_fmt(image.format.name)) else "MPEG"
            frame = self._reformatter.reformat(
                image,
                width=t.width,
                height=t.height,
                format=self.pix_fmt,
                src_colorspace=t.matrix,
                dst_colorspace=t.matrix,
                src_color_range=src_range,
                dst_color_range=yuv_range,
                interpolation=_SWS_FLAGS,
            )
        else:
            if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != (t.height, t.width):
                raise ValueError(f"expected a ({t.height}, {t.width}, 3) RGB frame, got {image.shape}")
            if image.dtype == np.uint8:
                src = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            elif image.dtype == np.uint16:
                src = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb48le")
            else:
                raise ValueError(f"RGB frames must be uint8 or uint16, got {image.dtype}")
            frame = self._reformatter.reformat(
                src,
                format=self.pix_fmt,
                dst_colorspace=t.matrix,
                src_color_range="JPEG",
                dst_color_range=yuv_range,
                interpolation=_SWS_FLAGS,
            )
        frame.pict_type = 0  # never force the decoder's frame types on the encoder
        if not _is_rgb_fmt(self.pix_fmt):
            frame.color_range = self._color_range
            frame.colorspace = self._colorspace
        frame.color_primaries = t.color_primaries
        frame.color_trc = t.color_trc
        return frame

    def write(self, image: np.ndarray | av.VideoFrame, pts: int, duration: int | None = None) -> None:
        """Encode one frame at ``pts`` (integer, in ``time_base`` units) lasting ``duration``.

        ``image`` is ``(H, W, 3)`` RGB, uint8 or uint16 (rgb48), or a decoded
        ``av.VideoFrame`` of the template's stream (re-encoded without an RGB round trip).
        Timestamps must increase.
        """
        frame = self._to_video_frame(image)
        if self._numbered:
            if self._first_number is None:
                self._first_number = round(pts * self.time_base * self.rate)
            frame.pts = self._first_number + self.frames_written
        else:
            frame.pts = int(pts)
        frame.time_base = self._stream_time_base
        if duration and not self._numbered:
            self._durations[int(pts)] = int(duration)
            if len(self._durations) > 4096:  # an encoder that rewrites pts: stay bounded
                del self._durations[min(self._durations)]
        try:
            self._pump(pts * self.time_base)
            self._mux_video(self._video.encode(frame))
        except av.error.FFmpegError as exc:
            raise OutputError(f"writing {self.name} failed: {exc}") from None
        self.frames_written += 1

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            self._out.mux(packet)

    def close(self) -> None:
        """Flush the encoder, copy the rest of the audio/subtitles and finish the file."""
        if self._closed:
            return
        try:
            self._mux_video(self._video.encode(None))
            self._pump(None)
            for index, src in self._decoders.items():
                out_s = self._stream_map[index]
                try:
                    for frame in src.decode(None):
                        self._encode_audio(index, frame)
                except av.error.FFmpegError:
                    pass
                self._out.mux(out_s.encode(None))
        except av.error.FFmpegError as exc:
            self.abort()
            raise OutputError(f"writing {self.name} failed: {exc}") from None
        self._closed = True
        if self._side is not None:
            self._side.close()
        try:
            self._out.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"finishing {self.name} failed: {exc}") from None

    def abort(self) -> None:
        """Close everything without finishing the file (after an error)."""
        if self._closed:
            return
        self._closed = True
        for container in (self._side, self._out):
            if container is None:
                continue
            try:
                container.close()
            except Exception:  # noqa: BLE001 - already failing; closing is best effort
                pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
