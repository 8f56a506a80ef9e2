"""Video through byte streams (stdin, stdout, sockets): ``Pipe``, ``PipeReader``, and the
formats a stream can carry (``PIPE_FORMATS``, what y4m can hold).

A stream is read once and strictly in order: nothing in it can be probed first and
read again, so its description comes from its headers alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import av
import av.error

from sepconv_cli.errors import InputError
from sepconv_cli.video.description import _Y4M_HEADER_MAX, _describe
from sepconv_cli.video.reading import FrameReader
from sepconv_cli.video_types import VideoInfo


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

