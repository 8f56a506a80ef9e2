"""Image sequences as a source or destination of frames, independent of any model.

A sequence is a folder of numbered image files (``frames/``) or a printf pattern
(``frames/%06d.png``). Reading (``SequenceReader``) yields the same ``video.Frame``
objects as ``video.FrameReader``, so the pipeline does not care where frames come
from; writing (``SequenceWriter``) takes the same ``write(image, pts, duration)`` calls
as ``video.VideoWriter``.

- Formats in: PNG and TIFF (8 or 16 bits per channel, grey, RGB or RGBA: alpha is
  dropped with a warning), JPEG, and the other formats OpenCV decodes. Out: PNG, TIFF
  (8 or 16 bits) and JPEG (8 bits).
- Order: files play in natural order (``frame2`` before ``frame10``), and the numbers
  must follow one another: a gap (``0012`` then ``0014``) is an ``InputError`` naming
  the missing frame, since the timing would silently be wrong.
- Timing: images carry no timestamps; frame i sits at i / ``rate`` seconds.
- Bit depth: 16-bit files give ``uint16`` RGB (0..65535), 8-bit ones ``uint8``; a
  sequence must not mix sizes or depths.

Nothing here prints or exits; problems are ``InputError`` / ``OutputError`` with one
line, or a ``VideoWarning``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.images import IMAGE_SUFFIXES
from sepconv_cli.timespan import SpanError, TimeSpan
from sepconv_cli.video import VideoWarning
from sepconv_cli.video_types import Frame, VideoInfo

__all__ = [
    "DEFAULT_INPUT_RATE",
    "DEFAULT_PATTERN",
    "WRITABLE_SUFFIXES",
    "ImageSequence",
    "SequenceReader",
    "SequenceWriter",
    "list_frames",
    "natural_key",
]

# Image sequences say nothing about their rate; 24 fps is the film and animation default.
DEFAULT_INPUT_RATE = Fraction(24)
DEFAULT_PATTERN = "%06d.png"
WRITABLE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg"})
_DEEP_SUFFIXES = frozenset({".png", ".tif", ".tiff"})
# ffmpeg's image2 muxer numbers from 1; doing the same keeps scripts interchangeable.
FIRST_NUMBER = 1

_PRINTF = re.compile(r"%(0?)(\d*)d")
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class ImageSequence:
    """Numbered image files: ``folder`` and an optional printf ``pattern`` for the names.

    ``pattern`` (e.g. ``"%06d.png"``): one ``%d`` / ``%0Nd`` in a file name. As a source
    without a pattern, every image file in ``folder`` is a frame; as a destination,
    ``DEFAULT_PATTERN`` is used. ``rate``: the frames per second a source plays at.
    """

    folder: Path
    pattern: str | None = None
    rate: Fraction = DEFAULT_INPUT_RATE

    @classmethod
    def parse(cls, text: str | Path, rate: Fraction | int | str = DEFAULT_INPUT_RATE) -> ImageSequence:
        """``frames/`` or ``frames/%06d.png`` as typed on the command line."""
        path = Path(text)
        if "%" in path.name:
            check_pattern(path.name)
            return cls(path.parent, path.name, Fraction(rate))
        if "%" in str(path.parent):
            raise InputError(f"only the file name may hold a %d pattern, not the folder: {text}")
        return cls(path, None, Fraction(rate))

    @property
    def name(self) -> str:
        """How messages show it: the pattern's path, or the folder with a slash."""
        return str(self.folder / self.pattern) if self.pattern else f"{self.folder}{os.sep}"

    @property
    def output_pattern(self) -> str:
        return self.pattern or DEFAULT_PATTERN

    def file_name(self, number: int) -> str:
        return self.output_pattern % number


def check_pattern(pattern: str) -> None:
    """Raise ``InputError`` unless ``pattern`` holds exactly one ``%d``/``%0Nd`` and no other ``%``."""
    if len(_PRINTF.findall(pattern)) != 1 or pattern.count("%") != 1:
        raise InputError(f"a frame pattern needs exactly one %d or %0Nd (e.g. %06d.png), not {pattern!r}")


def natural_key(name: str) -> tuple:
    """Sort key in which digit runs compare as numbers: ``f2.png`` before ``f10.png``."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part.lower()) for part in _NUMBER.split(name))


def _frame_number(name: str) -> int | None:
    """The last number in a file's stem (``shot_0012.png`` → 12), or None."""
    numbers = _NUMBER.findall(Path(name).stem)
    return int(numbers[-1]) if numbers else None


def list_frames(sequence: ImageSequence) -> list[Path]:
    """The sequence's files in play order; ``InputError`` if none, or on a numbering gap."""
    folder = sequence.folder
    if not folder.exists():
        raise InputError(f"frame folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    try:
        entries = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    except PermissionError:
        raise InputError(f"cannot read {folder}: permission denied") from None
    if sequence.pattern:
        head, tail = _PRINTF.split(sequence.pattern)[0], _PRINTF.split(sequence.pattern)[-1]
        width = _PRINTF.search(sequence.pattern)
        digits = rf"\d{{{int(width.group(2))},}}" if width and width.group(1) else r"\d+"
        regex = re.compile(re.escape(head) + f"({digits})" + re.escape(tail) + r"\Z")
        numbered = [(int(m.group(1)), p) for p in entries if (m := regex.match(p.name))]
        files = [p for _, p in sorted(numbered, key=lambda item: item[0])]
    else:
        files = sorted((p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"no image files in {sequence.name}")
    numbers = [_frame_number(p.name) for p in files]
    if all(n is not None for n in numbers):
        for before, after, path in zip(numbers, numbers[1:], files[1:]):
            if after == before:
                raise InputError(f"two frames numbered {after} in {sequence.name} ({path.name} and another)")
            if after != before + 1:
                missing = f"frame {before + 1}" if after == before + 2 else f"frames {before + 1}-{after - 1}"
                raise InputError(
                    f"{sequence.name}: the numbering jumps from {before} to {after} ({missing} missing, before "
                    f"{path.name}); restore or renumber the files"
                )
    return files


def _read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` RGB, uint8 or uint16 as stored; ``InputError`` if it does not decode."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read frame {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH) if data.size else None
    if image is None:
        raise InputError(f"frame {path} is not an image OpenCV can decode (corrupt or truncated?)")
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"frame {path} has {image.dtype} samples; only 8- and 16-bit images are read")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 4:
        image = image[:, :, :3]  # BGRA: alpha dropped (warned once by the reader)
    elif channels != 3:
        raise InputError(f"frame {path} has {channels} channels; expected grey, RGB or RGBA")
    return np.ascontiguousarray(image[:, :, ::-1])  # OpenCV's BGR → RGB


def _codec_name(path: Path) -> str:
    return {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg", ".tif": "tiff", ".tiff": "tiff"}.get(
        path.suffix.lower(), path.suffix.lower().lstrip(".")
    )


class SequenceReader:
    """Iterate over an image sequence as ``video.Frame`` objects, one image in memory at a time.

    ``info`` describes it like ``video.probe`` does a video: size and bit depth from the
    first image, ``frame_rate`` the sequence's ``rate``, ``time_base`` 1/``rate`` (frame
    i has ``timestamp`` i and ``duration`` 1), colour as sRGB (BT.709 tags, what a video
    encoder converting these frames to YUV should state). With ``span`` only the frames
    it covers are read (frame i shows at i / ``rate`` s), numbered from 0 again.
    """

    def __init__(self, sequence: ImageSequence, span: TimeSpan | None = None) -> None:
        if sequence.rate <= 0:
            raise InputError(f"the input frame rate must be positive, not {sequence.rate}")
        self.sequence = sequence
        self.files = list_frames(sequence)
        if span is not None:
            span.check(sequence.name, len(self.files) / sequence.rate)
            kept = span.frame_range(sequence.rate, len(self.files))
            if not kept:
                raise SpanError(f"no frames from {span.describe()} in {sequence.name}")
            self.files = self.files[kept.start:kept.stop]
        self.skipped_packets = 0  # the same report fields as video.FrameReader
        self.frames_read = 0
        first = _read_image(self.files[0])
        self._first = first
        deep = first.dtype == np.uint16
        self.info = VideoInfo(
            path=sequence.folder,
            width=first.shape[1],
            height=first.shape[0],
            frame_rate=sequence.rate,
            time_base=1 / sequence.rate,
            frames=len(self.files),
            duration=float(len(self.files) / sequence.rate),
            pix_fmt="rgb48le" if deep else "rgb24",
            bit_depth=16 if deep else 8,
            codec=_codec_name(self.files[0]),
            color_range=0,
            colorspace=1,
            color_primaries=1,
            color_trc=13,  # IEC 61966-2-1 (sRGB)
        )

    def __enter__(self) -> SequenceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._first = None

    def __iter__(self) -> Iterator[Frame]:
        info = self.info
        alpha_warned = False
        for index, path in enumerate(self.files):
            rgb = self._first if index == 0 and self._first is not None else _read_image(path)
            if rgb.shape[:2] != (info.height, info.width):
                raise InputError(
                    f"frame {path.name} is {rgb.shape[1]}x{rgb.shape[0]}, but the sequence starts at "
                    f"{info.width}x{info.height}; all frames must have one size"
                )
            if (rgb.dtype == np.uint16) != (info.bit_depth == 16):
                raise InputError(
                    f"frame {path.name} is {16 if rgb.dtype == np.uint16 else 8}-bit but the sequence starts "
                    f"{info.bit_depth}-bit; all frames must have one depth"
                )
            if not alpha_warned and index == 0 and self._has_alpha(path):
                alpha_warned = True
                warnings.warn(f"{path.name}: the alpha channel is dropped", VideoWarning, stacklevel=2)
            self.frames_read += 1
            yield Frame(rgb=rgb, pts=index / self.sequence.rate, index=index, timestamp=index, duration=1)

    @staticmethod
    def _has_alpha(path: Path) -> bool:
        # PNG colour type 4 or 6 (byte 25 of the IHDR chunk) carries alpha; other formats: not checked.
        try:
            with open(path, "rb") as handle:
                head = handle.read(26)
        except OSError:
            return False
        return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[25] in (4, 6)


class SequenceWriter:
    """Write frames as numbered images ``folder / (pattern % n)``, n from ``FIRST_NUMBER``.

    ``write(image, pts, duration)``: ``image`` is ``(H, W, 3)`` RGB uint8 or uint16;
    the timestamp is ignored (frames are numbered in the order they come). 16-bit
    frames stay 16-bit in PNG and TIFF; JPEG holds only 8 bits, so they are rounded
    with a warning. ``folder`` must exist; the caller decides where (a temporary folder
    renamed when complete, in the pipeline).
    """

    def __init__(self, folder: str | Path, pattern: str = DEFAULT_PATTERN, *, display_name: str | None = None) -> None:
        check_pattern(pattern)
        self.folder = Path(folder)
        self.pattern = pattern
        self.name = display_name or str(self.folder / pattern)
        self.suffix = Path(pattern).suffix.lower()
        if self.suffix not in WRITABLE_SUFFIXES:
            raise OutputError(
                f"cannot write {self.suffix or 'extension-less'} frames ({pattern}); use .png, .tif or .jpg"
            )
        self.frames_written = 0
        self.pix_fmt = ""
        # The same report fields as video.VideoWriter: images hold no sound.
        self.audio_copied = self.audio_reencoded = self.subtitles_copied = 0
        self._narrowed_warned = False

    def write(self, image: np.ndarray, pts: int = 0, duration: int | None = None) -> None:
        import cv2

        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got {getattr(image, 'shape', type(image).__name__)}")
        if image.dtype == np.uint16 and self.suffix not in _DEEP_SUFFIXES:
            if not self._narrowed_warned:
                self._narrowed_warned = True
                warnings.warn(
                    f"{self.suffix} holds 8 bits per channel: 16-bit frames are rounded (use .png or .tif to keep them)",
                    VideoWarning, stacklevel=2,
                )
            image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        self.pix_fmt = self.pix_fmt or ("rgb48le" if image.dtype == np.uint16 else "rgb24")
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if self.suffix in (".jpg", ".jpeg") else []
        ok, data = cv2.imencode(self.suffix, np.ascontiguousarray(image[:, :, ::-1]), params)
        if not ok:
            raise OutputError(f"could not encode frame {self.frames_written + FIRST_NUMBER} as {self.suffix}")
        path = self.folder / (self.pattern % (self.frames_written + FIRST_NUMBER))
        try:
            data.tofile(str(path))
        except OSError as exc:
            raise OutputError(f"writing {path.name} in {self.name} failed: {exc.strerror or exc}") from None
        self.frames_written += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass
