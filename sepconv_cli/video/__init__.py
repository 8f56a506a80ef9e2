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

The package's modules, each importing only those before it: ``description`` (``probe``,
``VideoWarning``), ``reading`` (``FrameReader``), ``pipes`` (``Pipe``, ``PipeReader``),
``encoders`` (``default_codec``, ``choose_pix_fmt``, ``quality_options``) and ``writing``
(``VideoWriter``). Import from ``sepconv_cli.video`` itself: the split is not an interface.
"""

from __future__ import annotations

# Everything importable from video.py before it became this package still is, the names
# outside __all__ (the constants behind the encoders' quality scales, the reorder window)
# included: tests, benchmarks and docs name them as ``video.X``.
from sepconv_cli.video.description import VideoWarning, probe
from sepconv_cli.video.encoders import (  # noqa: F401
    MPEG_Q_CRF_AT_1,
    MPEG_Q_CRF_PER_DOUBLING,
    VP9_CRF_AT_0,
    VP9_CRF_SLOPE,
    choose_pix_fmt,
    default_codec,
    mpeg_qscale,
    quality_options,
    vp9_crf,
)
from sepconv_cli.video.pipes import PIPE_FORMATS, Y4M_PIX_FMTS, Pipe, PipeReader, y4m_pix_fmt  # noqa: F401
from sepconv_cli.video.reading import REORDER_DEPTH, FrameReader, _in_presentation_order, iter_frames  # noqa: F401
from sepconv_cli.video.writing import VideoWriter
# Frame and VideoInfo live in video_types, below frame_kinds and timespan, which need
# VideoInfo too; imported here so that `from sepconv_cli.video import Frame, VideoInfo`
# keeps working for library users (the project's own modules import video_types).
from sepconv_cli.video_types import Frame, VideoInfo

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
