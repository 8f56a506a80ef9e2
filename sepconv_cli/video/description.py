"""What a video stream is, before any frame is read: ``probe`` and its ``VideoInfo``.

Also what reading and writing share: opening an input file with one-line errors, the
facts about pixel formats both convert through, the swscale flags of every colour
conversion, and ``VideoWarning``, the one warning the video package reports with.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.video.reformatter import Interpolation

from sepconv_cli.errors import InputError
from sepconv_cli.frame_kinds import field_order, has_alpha
from sepconv_cli.video_types import VideoInfo


class VideoWarning(UserWarning):
    """Something in a video was skipped, dropped or re-encoded; the output is still usable."""


_SWS_FLAGS = (
    Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
)
# y4m's chroma tags (the decoder's reading of them; a bare "C420" is JPEG's siting).
_Y4M_CHROMA = {b"420jpeg": "center", b"420": "center", b"420mpeg2": "left", b"420paldv": "topleft"}


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
