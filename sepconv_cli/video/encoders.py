"""Choosing how a video is encoded: which encoder a container gets (``default_codec``),
which pixel format it encodes to (``choose_pix_fmt``), and x264's quality scale
translated for the other encoders (``quality_options``)."""

from __future__ import annotations

import av
import av.error

from sepconv_cli.errors import OutputError
from sepconv_cli.video.description import _is_rgb_fmt

# Codecs that encode 4:2:0 at odd sizes; the common lossy encoders reject it.
_ODD_SIZE_OK = {"ffv1"}
# Lossless encoders: RGB in stays RGB, bit for bit.
_LOSSLESS = {"ffv1"}


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

