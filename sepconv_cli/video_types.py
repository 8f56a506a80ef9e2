"""What a video and its frames are, as plain data: ``VideoInfo`` and ``Frame``.

They sit below every module that reads, writes or inspects video (``video``,
``frame_kinds``, ``timespan``, ``sequences``, ``duplicates``, ``neighbourhood``,
``pipeline``) so that those can share them without importing one another; for that,
this module imports nothing of the project and not PyAV. ``video.probe`` and the readers
(``video``, ``sequences``) fill them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Frame", "VideoInfo", "is_full_range_fmt"]

# AVColorSpace (stream/frame matrix tag) -> swscale matrix name.
_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_RANGE_NAMES = {0: "unspecified", 1: "tv", 2: "pc"}
# Where 4:2:0 chroma samples sit, by source codec. PyAV does not expose the stream's
# chroma location, so it is inferred from the codec's convention (the decoders of these
# codecs report it so) and written to the output explicitly: otherwise a lossless
# re-encode in a codec with another default (FFV1, JPEG) would shift the chroma.
_CHROMA_LEFT = {"h264", "hevc", "vvc", "mpeg2video", "mpeg4", "h263", "vc1", "wmv3"}
_CHROMA_CENTER = {"mjpeg", "mpeg1video", "theora"}


def is_full_range_fmt(pix_fmt: str | None) -> bool:
    """Whether a pixel format is one of FFmpeg's full-range ``yuvj*`` ones."""
    return bool(pix_fmt) and pix_fmt.startswith("yuvj")


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a file's first video stream (and the file's other streams).

    ``frame_rate`` is the stream's average rate (``Fraction(0)`` when unknown);
    ``frames`` and ``duration`` (seconds) are ``None`` when the container does not say.
    Colour tags are FFmpeg's enum values (0 or 2 = unspecified): ``color_range``
    (1 = tv/limited, 2 = pc/full), ``colorspace`` (the YUV matrix, e.g. 1 = BT.709,
    6 = BT.601), ``color_primaries`` and ``color_trc`` (transfer). ``rotation`` is the
    display-matrix rotation in degrees, counter-clockwise (0 when absent).
    ``field_order``: ``"progressive"``, or for interlaced video which field comes first
    (``"tt"``, ``"bb"``, ``"tb"``, ``"bt"``, as FFmpeg names them; ``"interlaced"`` when the
    frames say so but not the order). ``alpha``: the stream carries transparency (a
    ``yuva``/``rgba`` pixel format, or VP9's alpha in Matroska/WebM).
    """

    path: Path
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    frames: int | None
    duration: float | None
    pix_fmt: str
    bit_depth: int
    codec: str
    color_range: int = 0
    colorspace: int = 2
    color_primaries: int = 2
    color_trc: int = 2
    rotation: int = 0
    audio_streams: int = 0
    subtitle_streams: int = 0
    start_time: Fraction = Fraction(0)
    chroma_siting: str | None = None  # as the file states it (a y4m header); else the codec's convention
    field_order: str = "progressive"
    alpha: bool = False

    @property
    def interlaced(self) -> bool:
        return self.field_order != "progressive"

    @property
    def chroma_location(self) -> str | None:
        """Where subsampled chroma sits ("left", "center", "topleft"), as the file states it or
        from the codec's convention; None if unknown."""
        if self.chroma_siting:
            return self.chroma_siting
        if self.codec in _CHROMA_LEFT:
            return "left"
        if self.codec in _CHROMA_CENTER:
            return "center"
        return None

    @property
    def matrix(self) -> str:
        """The swscale matrix used for YUV<->RGB (the tag, or the size-based guess)."""
        if self.colorspace in _MATRIX:
            return _MATRIX[self.colorspace]
        return "ITU709" if self.height >= 720 or self.width >= 1280 else "ITU601"

    @property
    def full_range(self) -> bool:
        """True when the YUV samples use the full (pc/jpeg) range."""
        return self.color_range == 2 or (self.color_range == 0 and is_full_range_fmt(self.pix_fmt))

    @property
    def range_name(self) -> str:
        return _RANGE_NAMES.get(self.color_range, str(self.color_range))


@dataclass
class Frame:
    """One decoded frame: ``rgb`` is ``(H, W, 3)`` uint8 for 8-bit video, uint16 (full
    0..65535 scale, i.e. rgb48) for deeper video; ``pts`` is in seconds (exact);
    ``timestamp`` is the same instant in the stream's ``time_base`` units; ``duration``
    in those units when the container says (else ``None``); ``index`` counts the frames
    yielded, from 0. ``source`` is the decoded PyAV frame, which ``VideoWriter`` can
    re-encode without the RGB round trip."""

    rgb: np.ndarray
    pts: Fraction
    index: int
    timestamp: int = 0
    duration: int | None = None
    source: Any = field(default=None, repr=False, compare=False)
