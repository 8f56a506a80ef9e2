"""Change a video's frame rate with a frame interpolator, streaming.

Two ways in, one streaming loop:

- ``interpolate_video``: 2, 4 or 8 times the frame rate with any *midpoint*
  interpolator (recursively for 4 and 8).
- ``retime_video``: any rate (24 → 60, 25 → 30, 30000/1001 → 60, or lower) with an
  interpolator that predicts the frame at any time t between two frames (``at``).

Both decode the input one frame at a time (``video.FrameReader``), ask the model for the
frames between each pair of neighbours (in batches of ``batch_size``), and encode the
result (``video.VideoWriter``) together with the input's audio and subtitles, which are
copied, not re-encoded. Memory holds the previous frame and one batch, whatever the
length of the video.

Timing, frame count and duration: ``factor``
--------------------------------------------
With ``factor`` F and N input frames the output has exactly F·N frames and the same
duration as the input. Each input frame keeps its own timestamp; the F−1 new frames
between input frames *a* and *b* sit at the exact fractions k/F of the interval
between their real timestamps (the output time base is the input's divided by F, so
every timestamp is an integer, and variable-frame-rate input keeps its timing). The
output's nominal rate is exactly F × the input's, as a fraction (30000/1001 fps in
gives 60000/1001 out). The last input frame has no successor, so it is shown F times
(itself and F−1 copies) spread over its own duration (the container's frame duration,
else the interval before it), which keeps the video as long as its audio.

Timing, frame count and duration: ``rate``
------------------------------------------
Output frame k sits at exactly ``first + k/rate`` seconds (``first``: the first input
frame's time), in ``output_time_base``: the rational gcd of the input's time base and
1/rate, so every output and input time is an integer there (1/12800 and 60 fps give
1/38400). Where an output time equals an input frame's timestamp the decoded frame is
written unchanged; otherwise ``at(a, b, t)`` predicts it with t = (time − t_a)/(t_b − t_a)
from the real timestamps of the input frames a and b around it, so variable-frame-rate
input becomes constant-rate output without drift. A lower rate works the same way (the
input frames on the new grid are kept, the others predicted; no averaging). The last
input frame is held on every grid time within its own duration, and the final output
frame is shortened to end where the input ends: ceil(duration × rate) frames, the same
duration, audio in sync.

Sources and destinations
------------------------
``src`` and ``dst`` are video files (``str``/``Path``), image sequences
(``sequences.ImageSequence``: a folder of numbered frames or a ``%06d.png`` pattern,
played at its ``rate``) or streams (``video.Pipe``: stdin/stdout in yuv4mpegpipe or
NUT), in any combination. A frame folder is filled under a hidden temporary name beside
it and renamed into place when complete, like a video file; its bit depth follows the
input's (16-bit PNG in, 16-bit PNG out; video deeper than 8 bits gives 16-bit frames).
A stream cannot be renamed: on failure it just ends early, and when its reader closes
it early the run stops with ``OutputClosed``. Audio is copied only from video files;
image sequences and y4m hold no sound, and a piped input is read once, for its video.

Duplicates
----------
With ``options.dedup`` (``retime_video`` only), repeated frames are dropped in the
decode thread (``duplicates.DuplicateFilter``): pairs then join distinct pictures at
their first appearances, so the frames predicted between them on the output grid move
evenly; a long run of copies arrives as a ``HOLD`` pair and is repeated, not blended.

Overlap
-------
Decoding (with cut detection) and encoding run in background threads with small
bounded queues (``overlap``), so the model is never kept waiting by FFmpeg; memory
still holds a few frames, whatever the length of the video.

Shot cuts
---------
Between two neighbours that ``scenes.is_cut`` calls a cut, nothing is blended: the
earlier frame is repeated for the in-between frames (counted in the report's ``cuts``;
with ``rate``, a cut counts when at least one frame fell between the two).
``scene_threshold <= 0`` turns detection off.

Bad input (each an ``InputError``, nothing left under the output name)
----------------------------------------------------------------------
Missing file, not a video, no video stream, no decodable frame, and a video with a
single frame (there is nothing to interpolate between; use a video of at least two
frames). Corrupt or truncated data is skipped with a warning, counted in the report's
``skipped_packets``, as long as at least two frames decode. Odd sizes (e.g. 175×143)
work: libx264/libx265 cannot subsample them to 4:2:0, so they are written 4:4:4 with a
warning (FFV1 keeps 4:2:0).
"""

from __future__ import annotations

import enum
import errno
import math
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from sepconv_cli import scenes
from sepconv_cli.duplicates import DuplicateFilter
from sepconv_cli.errors import InputError, OutputClosed, OutputError
from sepconv_cli.flow import Surroundings
from sepconv_cli.neighbourhood import Around, surroundings, wants_neighbours
from sepconv_cli.overlap import BackgroundConsumer, Prefetcher
from sepconv_cli.sequences import ImageSequence, SequenceReader, SequenceWriter
from sepconv_cli.timespan import Cut, TimeSpan
from sepconv_cli.video import (
    PIPE_FORMATS,
    FrameReader,
    Pipe,
    PipeReader,
    VideoWarning,
    VideoWriter,
    probe,
)
from sepconv_cli.video_types import Frame, VideoInfo

__all__ = [
    "FRAME_COUNT_NOTE",
    "Destination",
    "ImageSequence",
    "Link",
    "Pipe",
    "RATE_NOTE",
    "Source",
    "InterpolationReport",
    "VideoOptions",
    "check_paths",
    "interpolate_video",
    "midpoint_factor",
    "output_time_base",
    "retime_video",
]

Midpoint = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# at(a, b, t): (N, 3, H, W), (N, 3, H, W), (N,) times in (0, 1) -> (N, 3, H, W)
At = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, "int | None"], None]
# Where frames come from and go to: a video file, numbered images, or a stream (stdin/stdout).
Source = str | Path | ImageSequence | Pipe
Destination = str | Path | ImageSequence | Pipe

FRAME_COUNT_NOTE = (
    "With --factor F, N input frames become F×N output frames at exactly F times the "
    "input frame rate (30000/1001 fps becomes 60000/1001). Every new frame sits at the "
    "exact time fraction between its two neighbours, so variable-frame-rate video keeps "
    "its timing. The last frame has no successor, so it is repeated F−1 times over its "
    "own duration: the output is exactly as long as the input and stays in sync with "
    "the audio, which is copied unchanged. At a shot cut the earlier frame is repeated "
    "instead of blending two unrelated pictures."
)

RATE_NOTE = (
    "With --fps RATE every output frame sits at exactly k/RATE seconds after the first "
    "frame. Where that is an input frame's own time the frame is kept as decoded; "
    "otherwise it is predicted at the exact fraction of the way between the input frames "
    "around it (variable-frame-rate input becomes constant-rate output), or, across a shot "
    "cut, the earlier frame is repeated. A lower RATE keeps the input frames on the new "
    "grid and predicts the rest. The last frame is held for its own duration, so the "
    "output is exactly as long as the input and the audio, copied unchanged, stays in sync."
)


@dataclass(frozen=True)
class VideoOptions:
    """How ``interpolate_video`` writes its output.

    ``factor``: 2, 4 or 8 (4 and 8 by recursive midpoints). ``codec``/``crf``/
    ``preset``: the video encoder (``None``: the output container's usual one, libx264
    wherever H.264 fits, VP9 in WebM, MPEG-2 in MPEG-PS; see ``video.default_codec``) and
    its quality settings on x264's scale (translated for VP9 and MPEG-2).
    ``lossless``: FFV1 in Matroska instead (output must end in ``.mkv``).
    ``overwrite``: replace an existing output. ``scene_threshold``: cut sensitivity
    for ``scenes.is_cut`` (``<= 0`` disables cut detection). ``batch_size``: frame
    pairs per ``midpoint`` call (``retime_video``: new frames per ``at`` call).
    ``codec_options``: extra encoder options. ``dedup``: drop repeated frames, with
    ``"auto"`` (the threshold learnt from the clip) or a fixed threshold in 8-bit levels
    (``retime_video`` only; ``None``: off; see ``duplicates``). ``span``: only that part of the input
    (``timespan.TimeSpan``), its audio and subtitles cut to match, the output starting at 0.
    ``deinterlace``: put interlaced video through FFmpeg's bwdif filter (files and streams).
    """

    factor: int = 2
    codec: str | None = None
    crf: int = 18
    preset: str = "medium"
    lossless: bool = False
    overwrite: bool = False
    scene_threshold: float = scenes.DEFAULT_THRESHOLD
    batch_size: int = 1
    codec_options: dict[str, str] = field(default_factory=dict)
    dedup: float | str | None = None
    span: TimeSpan | None = None
    deinterlace: bool = False


@dataclass(frozen=True)
class InterpolationReport:
    """What ``interpolate_video`` did. Durations are in seconds, rates in frames/second."""

    input_path: Path
    output_path: Path
    factor: int | None  # None for retime_video
    input_frames: int
    output_frames: int
    input_rate: Fraction
    output_rate: Fraction
    input_duration: float
    output_duration: float
    cuts: int
    skipped_packets: int
    seconds: float
    pix_fmt: str = ""
    audio_copied: int = 0
    audio_reencoded: int = 0
    subtitles_copied: int = 0
    duplicates: int | None = None  # repeated frames dropped by dedup; None: dedup was off
    codec: str = ""  # the video encoder ("" for image files)
    output_folder: bool = False  # output_path is a folder of frames
    codec_chosen: bool = False  # picked for the container because none was asked for

    def summary(self) -> str:
        """One line for the CLI."""
        rate_in = _fmt_rate(self.input_rate)
        rate_out = _fmt_rate(self.output_rate)
        parts = [
            f"{self.input_frames} → {self.output_frames} frames",
            f"{rate_in} → {rate_out} fps",
            f"{self.output_duration:.3f} s",
        ]
        if self.duplicates is not None:
            parts.append(f"{self.duplicates} duplicate frame{'s' if self.duplicates != 1 else ''} found")
        if self.cuts:
            parts.append(f"{self.cuts} cut{'s' if self.cuts != 1 else ''} not blended")
        if self.skipped_packets:
            parts.append(f"{self.skipped_packets} corrupt packet(s) skipped")
        if self.codec_chosen and self.codec != "libx264":
            parts.append(f"{self.codec} ({self.output_path.suffix or 'this container'} cannot hold libx264)")
        parts.append(f"in {self.seconds:.1f} s")
        return f"{self.output_path.name}{os.sep if self.output_folder else ''}: " + ", ".join(parts)


def _fmt_rate(rate: Fraction) -> str:
    if rate.denominator == 1:
        return str(rate.numerator)
    return f"{rate.numerator}/{rate.denominator} (≈{float(rate):.3f})"


# -- safety ------------------------------------------------------------------------


def check_paths(src: Source, dst: Destination, overwrite: bool) -> None:
    """Refuse, before any work, an input or output that ``interpolate_video`` could not use.

    ``src``/``dst``: a video file (``str``/``Path``), an ``ImageSequence`` or a ``Pipe``.
    """
    if isinstance(src, (str, Path)):
        src = Path(src)
        if not src.exists():
            raise InputError(f"input video not found: {src}")
        if src.is_dir():
            raise InputError(f"input is a folder, not a video file: {src}")
    elif isinstance(src, ImageSequence):
        if not src.folder.is_dir():
            raise InputError(f"frame folder not found: {src.folder}")
    if isinstance(dst, ImageSequence):
        _check_frame_folder(src, dst, overwrite)
        return
    if isinstance(dst, Pipe):
        return
    dst = Path(dst)
    if isinstance(src, Path) and (src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst))):
        raise OutputError(f"output {dst} is the input video; choose another output name")
    if dst.is_dir():
        name = src.stem if isinstance(src, Path) else "out"
        raise OutputError(f"output {dst} is a folder; give a file name such as {dst / (name + '.2x.mp4')}")
    if dst.exists() and not overwrite:
        raise OutputError(f"output {dst} already exists (use --overwrite to replace it)")
    _check_writable_folder(dst.parent)


def _check_writable_folder(folder: Path) -> None:
    if not folder.exists():
        raise OutputError(f"output folder does not exist: {folder}")
    if not folder.is_dir():
        raise OutputError(f"output folder is not a folder: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to output folder {folder}: permission denied")


def _check_frame_folder(src: Source, dst: ImageSequence, overwrite: bool) -> None:
    """A frame folder is written whole under a temporary name and then renamed, so it
    must be new, empty, or (with ``overwrite``) hold nothing but frames of its pattern;
    it is never the input's folder and never holds the input."""
    folder = dst.folder
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output {folder} is a file, not a folder for frames")
    _check_writable_folder(folder.resolve().parent)
    if not folder.exists():
        return
    if isinstance(src, ImageSequence) and src.folder.exists() and os.path.samefile(src.folder, folder):
        raise OutputError(f"output folder {folder} is the input's; choose another folder")
    entries = list(folder.iterdir())
    if not entries:
        return
    if not overwrite:
        raise OutputError(f"output folder {folder} is not empty (use --overwrite to replace the frames in it)")
    others = [p.name for p in entries if not (p.is_file() and _is_frame_name(p.name, dst.output_pattern))]
    if others:
        raise OutputError(
            f"output folder {folder} holds other files than {dst.output_pattern} frames (e.g. {others[0]}); "
            "choose a new or empty folder"
        )


def _is_frame_name(name: str, pattern: str) -> bool:
    head, _, rest = pattern.partition("%")
    tail = rest.split("d", 1)[1]
    return name.startswith(head) and name.endswith(tail) and name[len(head) : len(name) - len(tail)].isdigit()


def _temp_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.stem}.partial-{secrets.token_hex(4)}{dst.suffix}")


# -- conversion ----------------------------------------------------------------------


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8/uint16 → ``(3, H, W)`` float32 in [0, 1] (full precision)."""
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1).div_(top)


def _to_rgb(t: torch.Tensor, deep: bool) -> np.ndarray:
    top = 65535.0 if deep else 255.0
    arr = t.detach().to("cpu", torch.float32).clamp(0, 1).mul(top).round_().permute(1, 2, 0)
    return np.ascontiguousarray(arr.numpy().astype(np.uint16 if deep else np.uint8))


def _original(frame: Frame):
    """An input frame as the writer should get it: the decoded frame itself when there
    is one (no RGB round trip, so lossless output keeps it bit for bit), else its RGB."""
    return frame.source if frame.source is not None else frame.rgb


class _Interpolator:
    """Runs ``midpoint`` over batches of frame pairs, recursively for factors 4 and 8."""

    def __init__(self, midpoint: Midpoint, factor: int, batch_size: int) -> None:
        self.midpoint = midpoint
        self.factor = factor
        self.batch_size = batch_size
        self.neighbours = wants_neighbours(midpoint)

    def _call(self, a: torch.Tensor, b: torch.Tensor, around: Surroundings | None = None) -> torch.Tensor:
        outs = []
        for start in range(0, a.shape[0], self.batch_size):
            part = slice(start, start + self.batch_size)
            if around is None:
                m = self.midpoint(a[part], b[part])
            else:
                m = self.midpoint(a[part], b[part], neighbours=Surroundings(
                    around.before[part], around.after[part], around.before_gap[part], around.after_gap[part],
                    around.valid[part]))
            if not isinstance(m, torch.Tensor) or tuple(m.shape) != tuple(a[start : start + self.batch_size].shape):
                got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"midpoint returned {got}, expected {tuple(a[start:start + self.batch_size].shape)}")
            outs.append(m.detach().to("cpu", torch.float32))
        return torch.cat(outs)

    def between(self, pairs: list[tuple[Frame, Frame]], arounds: list[Around] | None = None) -> list[list[torch.Tensor]]:
        """For each pair, the ``factor - 1`` frames in between, as (3, H, W) tensors. The
        first halving reads the input frames around each pair (``arounds``) when the model
        wants them; later halvings are between a new frame and an input: linear motion."""
        if not pairs:
            return []
        f = self.factor
        # positions[i][j]: frame j/f of the way from pair i's first to its second frame
        positions: list[dict[int, torch.Tensor]] = [
            {0: _to_tensor(a.rgb), f: _to_tensor(b.rgb)} for a, b in pairs
        ]
        step = f
        while step > 1:
            half = step // 2
            jobs = [(i, j) for i in range(len(pairs)) for j in range(0, f, step)]
            a = torch.stack([positions[i][j] for i, j in jobs])
            b = torch.stack([positions[i][j + step] for i, j in jobs])
            around = None
            if step == f and self.neighbours and arounds is not None:
                around = surroundings([(*pairs[i], arounds[i]) for i, _ in jobs], _to_tensor, a, b)
            mids = self._call(a, b, around)
            for (i, j), m in zip(jobs, mids):
                positions[i][j + half] = m
            step = half
        return [[p[k] for k in range(1, f)] for p in positions]


# -- schedules: which frame goes out when ------------------------------------------------


class Link(enum.Enum):
    """How a frame joins the one before it."""

    BLEND = "blend"  # interpolate between them
    CUT = "cut"  # a shot cut: the earlier frame is repeated, never blended
    HOLD = "hold"  # a pause (``dedup``): the earlier frame is repeated, it is the same picture


Submit = Callable[[tuple[object, int, int]], None]


class _Multiplying:
    """``factor`` frames per input frame: the input's own timestamps, the new frames at
    the exact fractions k/factor between neighbours (output time base = input's / factor)."""

    def __init__(self, midpoint: Midpoint, factor: int, input_time_base: Fraction, batch_size: int) -> None:
        self.interp = _Interpolator(midpoint, factor, batch_size)
        self.factor = factor
        self.time_base = input_time_base / factor
        self.cuts = 0

    def nominal_rate(self, input_rate: Fraction) -> Fraction:
        return input_rate * self.factor

    @property
    def reads_neighbours(self) -> bool:
        return self.interp.neighbours

    def pairs(self, pairs: list[tuple[Frame, Frame, Link]], submit: Submit, arounds: list[Around] | None = None) -> int:
        f = self.factor
        self.cuts += sum(link is Link.CUT for _, _, link in pairs)
        arounds = arounds or [Around() for _ in pairs]
        blending = [k for k, (_, _, link) in enumerate(pairs) if link is Link.BLEND]
        blended = iter(self.interp.between([pairs[k][:2] for k in blending], [arounds[k] for k in blending]))
        for a, b, link in pairs:
            cut = link is not Link.BLEND
            # Frame a sits at a·factor and the k-th new frame k/factor of the way to b at
            # a·factor + k·(b − a).
            step = b.timestamp - a.timestamp
            mids = None if cut else next(blended)
            submit((_original(a), a.timestamp * f, step))
            for k in range(1, f):
                submit((_original(a) if cut else mids[k - 1], a.timestamp * f + k * step, step))
        return f * len(pairs)

    def last(self, before_last: Frame, last: Frame, submit: Submit) -> tuple[int, int]:
        """Show the last frame ``factor`` times over its own duration; (frames, end in the input's units)."""
        step = last.duration or (last.timestamp - before_last.timestamp)
        for k in range(self.factor):
            submit((_original(last), last.timestamp * self.factor + k * step, step))
        return self.factor, last.timestamp + step


def output_time_base(input_time_base: Fraction, rate: Fraction) -> Fraction:
    """The coarsest time base in which every input timestamp and every multiple of 1/``rate``
    is an integer: the rational gcd of the two (gcd of numerators / lcm of denominators).

    1/12800 (MP4 at 25 fps) and 60 fps give 1/38400; 1/30000 and 60 fps give 1/30000.
    """
    frame = 1 / Fraction(rate)
    tb = Fraction(input_time_base)
    return Fraction(math.gcd(tb.numerator, frame.numerator), math.lcm(tb.denominator, frame.denominator))


def midpoint_factor(rate: Fraction, input_rate: Fraction) -> int | None:
    """The ``factor`` (2, 4 or 8) with ``rate == factor × input_rate`` exactly, else None:
    the only rates a midpoint-only model can produce."""
    if not input_rate:
        return None
    ratio = Fraction(rate) / Fraction(input_rate)
    return int(ratio) if ratio in (2, 4, 8) else None


# Output time bases are C ints (AVRational) and MP4 timescales 32-bit.
_MAX_TIME_BASE = 2**31 - 1


class _Retiming:
    """Frames on the grid ``first + k/rate`` (seconds, exact), each taken from the input
    pair around it: the earlier input frame itself where the times coincide exactly (or
    across a shot cut), else ``at(a, b, t)`` with ``t`` the exact fraction of the way
    from a's real timestamp to b's (so VFR input is handled)."""

    def __init__(self, at: At, rate: Fraction, input_time_base: Fraction, batch_size: int) -> None:
        self.at = at
        self.neighbours = wants_neighbours(at)
        self.rate = Fraction(rate)
        self.input_time_base = Fraction(input_time_base)
        self.batch_size = batch_size
        self.time_base = output_time_base(self.input_time_base, self.rate)
        if self.time_base.denominator > _MAX_TIME_BASE or self.time_base.numerator > _MAX_TIME_BASE:
            raise OutputError(
                f"{_fmt_rate(self.rate)} fps and the input's time base {self.input_time_base} have no common "
                "time base a container can store; give the rate as a simpler fraction (e.g. 30000/1001)"
            )
        self.step = int(1 / (self.rate * self.time_base))  # one output frame, in time_base units (exact)
        self.start: Fraction | None = None  # the first input frame's time, in seconds
        self.next_k = 0
        self.cuts = 0
        # The latest frame is held back one frame: whether it is the last, which may have
        # to be shortened to end with the input, is known only at the end.
        self._held: tuple[object, int, int] | None = None

    def nominal_rate(self, input_rate: Fraction) -> Fraction:
        return self.rate

    @property
    def reads_neighbours(self) -> bool:
        return self.neighbours

    def _submit(self, job: tuple[object, int, int], submit: Submit) -> None:
        if self._held is not None:
            submit(self._held)
        self._held = job

    def _time(self, k: int) -> Fraction:
        assert self.start is not None
        return self.start + k / self.rate

    def _units(self, seconds: Fraction) -> int:
        units = seconds / self.time_base
        assert units.denominator == 1, (seconds, self.time_base)  # by construction of time_base
        return units.numerator

    def pairs(self, pairs: list[tuple[Frame, Frame, Link]], submit: Submit, arounds: list[Around] | None = None) -> int:
        if self.start is None:
            self.start = pairs[0][0].pts
        # plan: (image or None for "predicted", pts); rows: what to predict, in order.
        plan: list[tuple[object | None, int]] = []
        rows: list[tuple[Frame, Frame, Fraction, Around]] = []
        for (a, b, link), around in zip(pairs, arounds or [Around() for _ in pairs]):
            repeated = False
            while (s := self._time(self.next_k)) < b.pts:
                if s == a.pts or link is not Link.BLEND:
                    plan.append((_original(a), self._units(s)))
                    repeated |= s != a.pts
                else:
                    plan.append((None, self._units(s)))
                    rows.append((a, b, (s - a.pts) / (b.pts - a.pts), around))
                self.next_k += 1
            self.cuts += repeated and link is Link.CUT  # a cut that would otherwise have been blended
        # Predict in chunks of batch_size frames and submit as each chunk is done, so only
        # one chunk of new frames is in memory even when one pair needs many.
        predicted: Iterator[torch.Tensor] = iter(())
        done = 0
        for image, pts in plan:
            if image is None:
                frame = next(predicted, None)
                if frame is None:
                    predicted = iter(self._predict(rows[done : done + self.batch_size]))
                    done += self.batch_size
                    frame = next(predicted)
                image = frame
            self._submit((image, pts, self.step), submit)
        return len(plan)

    def _predict(self, rows: list[tuple[Frame, Frame, Fraction, Around]]) -> list[torch.Tensor]:
        tensors: dict[int, torch.Tensor] = {}

        def tensor(frame: Frame) -> torch.Tensor:  # each frame converted once per chunk
            if id(frame) not in tensors:
                tensors[id(frame)] = _to_tensor(frame.rgb)
            return tensors[id(frame)]

        a = torch.stack([tensor(a) for a, _, _, _ in rows])
        b = torch.stack([tensor(b) for _, b, _, _ in rows])
        # float64: the exact fraction rounded once (the engine takes float32).
        t = torch.tensor([float(t) for _, _, t, _ in rows], dtype=torch.float64)
        if self.neighbours:
            around = surroundings([(a_, b_, r) for a_, b_, _, r in rows], _to_tensor, a, b)
            out = self.at(a, b, t, neighbours=around)
        else:
            out = self.at(a, b, t)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(a.shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"at returned {got}, expected {tuple(a.shape)}")
        return list(out.detach().to("cpu", torch.float32))

    def last(self, before_last: Frame, last: Frame, submit: Submit) -> tuple[int, int]:
        """Repeat the last frame on every grid time within its own duration; the final
        output frame (this one or an earlier one) is shortened to end exactly where the
        input does. Returns (frames, end in the input's time base units)."""
        duration = last.duration or (last.timestamp - before_last.timestamp)
        end = last.pts + duration * self.input_time_base
        count = 0
        while (s := self._time(self.next_k)) < end:
            self._submit((_original(last), self._units(s), self.step), submit)
            self.next_k += 1
            count += 1
        assert self._held is not None  # the first input frame's time is always on the grid
        image, pts, step = self._held
        submit((image, pts, min(step, self._units(end) - pts)))
        self._held = None
        return count, last.timestamp + duration


# -- main ------------------------------------------------------------------------------

# Decoded frames that may wait for the network: enough to cover a decode hiccup, few
# enough that 4K frames (25 MB each as RGB) stay cheap.
_PREFETCH = 4


def _links(
    frames: Iterator[Frame] | FrameReader | SequenceReader,
    threshold: float,
    keep_source: bool = True,
    dedup: DuplicateFilter | None = None,
) -> Iterator[tuple[Frame, Link]]:
    """Each frame with how it joins the one before (``BLEND`` for the first): a shot cut
    (``CUT``), or with ``dedup`` a pause (``HOLD``), the repeated frames being dropped.
    Runs in the decode thread: a 1080p histogram costs about 20 ms on a CPU, a duplicate
    check about as much. Without ``keep_source`` the decoded PyAV frame is let go (only
    the RGB is written)."""
    detect = scenes.CutDetector(threshold)
    previous: Frame | None = None
    marked: Iterator[tuple[Frame, bool]] = dedup(frames) if dedup is not None else ((f, False) for f in frames)
    for frame, hold in marked:
        if not keep_source:
            frame.source = None
        if hold:
            link = Link.HOLD
        elif previous is not None and threshold > 0 and detect(previous.rgb, frame.rgb):
            link = Link.CUT
        else:
            link = Link.BLEND
        yield frame, link
        previous = frame


def interpolate_video(
    src: Source,
    dst: Destination,
    midpoint: Midpoint,
    *,
    options: VideoOptions = VideoOptions(),
    progress: Progress | None = None,
) -> InterpolationReport:
    """Write ``src`` at ``options.factor`` times its frame rate to ``dst``.

    ``midpoint(a, b)`` takes two float32 CPU tensors ``(N, 3, H, W)`` in [0, 1] (N frame
    pairs; 8-bit video arrives as uint8/255, deeper video as uint16/65535) and returns
    the ``(N, 3, H, W)`` frames halfway between them, in [0, 1].

    Output: ``factor × N`` frames for N input frames, at exactly ``factor ×`` the input
    rate, new frames at the exact timestamp fractions between their neighbours (VFR
    timing kept), the last frame repeated ``factor − 1`` times over its own duration so
    the duration is unchanged; no blending across shot cuts (the earlier frame is
    repeated). Audio is copied (see ``VideoWriter``). See the module docstring for the
    full rules and the bad inputs refused with ``InputError`` / ``OutputError``.

    ``src`` and ``dst`` are video paths, ``ImageSequence`` frames or ``Pipe`` streams (see
    the module docstring). A file or folder is written under a hidden temporary name next
    to ``dst`` and renamed over it at the end; on any error or interruption the temporary
    one is deleted and ``dst`` is left as it was. The input is only read. ``progress(done, total)`` is called after
    each input frame (``total`` is ``None`` when the container does not say).
    """
    if options.factor not in (2, 4, 8):
        raise ValueError(f"factor must be 2, 4 or 8, not {options.factor}")
    if options.dedup is not None:
        # Between distinct frames spread over several intervals, factor midpoints would
        # thin the output's rate there; even timing needs frames at any time.
        raise ValueError("dedup needs retime_video (e.g. rate=lambda r: 2 * r) and a model that predicts any time")
    return _process(
        src, dst, lambda info: _Multiplying(midpoint, options.factor, info.time_base, options.batch_size),
        options=options, progress=progress, factor=options.factor,
    )


def retime_video(
    src: Source,
    dst: Destination,
    at: At,
    rate: Fraction | int | float | str | Callable[[Fraction], Fraction],
    *,
    options: VideoOptions = VideoOptions(),
    progress: Progress | None = None,
) -> InterpolationReport:
    """Write ``src`` at exactly ``rate`` frames per second to ``dst`` (higher or lower).

    ``rate``: a ``Fraction``, an int, a float as written (59.94) or a string ("30000/1001"),
    or a function of the input's stated rate (``lambda r: 2 * r``: twice the rate, known
    only once a stream is read).

    ``at(a, b, t)`` takes two float32 CPU tensors ``(N, 3, H, W)`` in [0, 1] and an
    ``(N,)`` float64 tensor of times in (0, 1) and returns the ``(N, 3, H, W)`` frames at
    those fractions of the way from ``a`` to ``b`` (``Interpolator.at`` of a model that
    takes any time). ``options.factor`` is ignored; ``options.batch_size`` is the number
    of frames per ``at`` call.

    Output frame k sits at exactly ``first + k/rate`` seconds, ``first`` being the first
    input frame's time, in a time base where all of those are integers
    (``output_time_base``). Where that time is an input frame's own timestamp the decoded
    frame is written unchanged; otherwise the frame is predicted between the two input
    frames around it, at the exact fraction of the way between their real timestamps
    (so VFR input gives CFR output without drift), or, across a shot cut, the earlier
    one is repeated. A lower rate than the input's keeps the input frames that fall on
    the new grid and predicts the others; nothing is averaged over the dropped frames.
    The last input frame is repeated over its own duration and the final output frame
    is shortened to end where the input does, so the durations are equal and the audio,
    copied unchanged, stays in sync. Errors and the temporary file as ``interpolate_video``.

    With ``options.dedup`` (a threshold, see ``duplicates``) repeated frames are dropped
    first, so new frames are predicted between distinct pictures at the times they first
    appear and motion drawn on twos (or with dropped-frame copies) comes out even; a run of
    more than ``duplicates.DEFAULT_MAX_REPEATS`` copies is a real pause and stays still.
    The report's ``duplicates`` counts the copies found.
    """
    if callable(rate):
        of_input = rate

        def schedule(info: VideoInfo) -> _Retiming:
            if not info.frame_rate:
                raise InputError(f"{info.path} states no frame rate to derive the output's from; give a rate")
            return _Retiming(at, _exact_rate(of_input(info.frame_rate)), info.time_base, options.batch_size)
    else:
        exact = _exact_rate(rate)

        def schedule(info: VideoInfo) -> _Retiming:
            return _Retiming(at, exact, info.time_base, options.batch_size)

    return _process(src, dst, schedule, options=options, progress=progress, factor=None)


def _exact_rate(rate: Fraction | int | float | str) -> Fraction:
    try:
        # A float is taken as written (59.94 → 2997/50), not as its binary expansion.
        exact = Fraction(repr(rate)) if isinstance(rate, float) else Fraction(rate)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"rate must be a number of frames per second, not {rate!r}") from None
    if exact <= 0:
        raise ValueError(f"rate must be positive, not {exact}")
    return exact


class _FileSink:
    """A video file, written under a hidden temporary name and renamed when complete."""

    def __init__(self, dst: Path) -> None:
        self.dst = dst
        self.tmp = _temp_path(dst)
        self.writer: VideoWriter | None = None

    def open(self, info: VideoInfo, rate: Fraction | None, time_base: Fraction, options: VideoOptions,
             copy_streams: bool, cut: Cut | None = None) -> VideoWriter:
        self.writer = VideoWriter(
            self.tmp, info, rate=rate, time_base=time_base, codec=options.codec, crf=options.crf,
            preset=options.preset, lossless=options.lossless, codec_options=options.codec_options,
            copy_streams=copy_streams, display_name=self.dst.name, cut=cut,
        )
        return self.writer

    def commit(self) -> None:
        os.replace(self.tmp, self.dst)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        try:
            self.tmp.unlink()
        except OSError:
            pass


class _FolderSink:
    """A frame folder, filled under a hidden temporary name beside it and renamed into
    place when complete (an old folder of frames, with ``overwrite``, is swapped out and
    deleted only then)."""

    def __init__(self, dst: ImageSequence) -> None:
        self.dst = dst
        folder = dst.folder.resolve()
        self.folder = folder
        self.tmp = folder.with_name(f".{folder.name}.partial-{secrets.token_hex(4)}")

    def open(self, info: VideoInfo, rate: Fraction | None, time_base: Fraction, options: VideoOptions,
             copy_streams: bool, cut: Cut | None = None) -> SequenceWriter:
        writer = SequenceWriter(self.tmp, self.dst.output_pattern, display_name=self.dst.name)
        try:
            self.tmp.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create a folder beside {self.dst.folder}: {exc.strerror or exc}") from None
        if info.audio_streams and copy_streams:
            warnings.warn(
                f"{info.audio_streams} audio stream(s) not written: image sequences hold no sound", VideoWarning,
                stacklevel=4,
            )
        return writer

    def commit(self) -> None:
        old = None
        if self.folder.exists():
            if any(self.folder.iterdir()):
                old = self.folder.with_name(f".{self.folder.name}.old-{secrets.token_hex(4)}")
                os.rename(self.folder, old)
            else:
                self.folder.rmdir()
        os.rename(self.tmp, self.folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class _PipeSink:
    """A stream (stdout): no temporary name is possible, so a failure just ends it
    early; the reader sees a cut stream, never a file to mistake for a finished one."""

    def __init__(self, dst: Pipe) -> None:
        self.dst = dst
        self.writer: VideoWriter | None = None

    def open(self, info: VideoInfo, rate: Fraction | None, time_base: Fraction, options: VideoOptions,
             copy_streams: bool, cut: Cut | None = None) -> VideoWriter:
        y4m = self.dst.format == PIPE_FORMATS["y4m"]
        codec = options.codec
        if y4m:
            codec = codec or "rawvideo"
            if codec not in ("rawvideo", "wrapped_avframe"):
                raise OutputError(f"a y4m stream holds raw frames only, not {codec}; use --format nut")
        if info.audio_streams and y4m and copy_streams:
            warnings.warn(
                f"{info.audio_streams} audio stream(s) not written: a y4m stream holds no sound (use --format nut)",
                VideoWarning, stacklevel=4,
            )
        self.writer = VideoWriter(
            Path(self.dst.name), info, rate=rate, time_base=time_base, codec=codec, crf=options.crf,
            # y4m's raw frames are lossless already (and FFV1 would not fit in it).
            preset=options.preset, lossless=options.lossless and not y4m, codec_options=options.codec_options,
            copy_streams=copy_streams and not y4m, display_name=self.dst.name,
            file=self.dst.file, format=self.dst.format, cut=cut,
        )
        return self.writer

    def commit(self) -> None:
        flush = getattr(self.dst.file, "flush", None)
        if flush is not None:
            try:
                flush()
            except BrokenPipeError:
                raise OutputClosed(f"the reader of {self.dst.name} closed it before the end") from None

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _is_broken_pipe(error: BaseException) -> bool:
    """Whether writing failed because the stream's reader went away (EPIPE), which PyAV
    reports as its own error or as the file object's ``BrokenPipeError``."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BrokenPipeError) or getattr(seen, "errno", None) == errno.EPIPE:
            return True
        if "Broken pipe" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _open_source(src: Source, span: TimeSpan | None = None,
                 deinterlace: bool = False) -> tuple[FrameReader | SequenceReader, Path]:
    """The reader for ``src`` (of its part ``span``) and the path that names it in the report."""
    if isinstance(src, ImageSequence):
        return SequenceReader(src, span), Path(src.name)
    if isinstance(src, Pipe):
        if span is not None:
            raise ValueError("a span of a stream cannot be read; cut the stream before it is sent")
        reader = PipeReader(src)
        reader.deinterlace = deinterlace
        return reader, Path(src.name)
    path = Path(src)
    return FrameReader(path, probe(path), span, deinterlace), path


def _open_sink(dst: Destination) -> tuple[_FileSink | _FolderSink | _PipeSink, Path]:
    if isinstance(dst, ImageSequence):
        return _FolderSink(dst), dst.folder  # the folder names the output, not its file pattern
    if isinstance(dst, Pipe):
        return _PipeSink(dst), Path(dst.name)
    return _FileSink(Path(dst)), Path(dst)


def _process(
    src: Source,
    dst: Destination,
    make_schedule: Callable[..., _Multiplying | _Retiming],
    *,
    options: VideoOptions,
    progress: Progress | None,
    factor: int | None,
) -> InterpolationReport:
    """Decode ``src``, let the schedule turn input frame pairs into timed output frames,
    encode them to ``dst`` (see ``interpolate_video``)."""
    started = time.perf_counter()
    if options.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {options.batch_size}")
    check_paths(src, dst, options.overwrite)
    reader, src_path = _open_source(src, options.span, options.deinterlace)
    info = reader.info
    sink, dst_path = _open_sink(dst)
    schedule = make_schedule(info)
    deep = info.bit_depth > 8
    threshold = options.scene_threshold
    total = info.frames
    if total is None and info.duration and info.frame_rate:
        total = max(2, round(info.duration * info.frame_rate))  # an estimate (e.g. Matroska)
    output_rate = schedule.nominal_rate(info.frame_rate) or None  # None: the writer's fallback
    # Audio and subtitles are copied from a second reading of a video file; a pipe
    # cannot be read twice and an image sequence has none.
    copy_streams = isinstance(src, (str, Path))
    if isinstance(src, Pipe) and info.audio_streams:
        warnings.warn(
            f"{info.audio_streams} audio stream(s) in {src.name} not written: a stream is read once, for its video",
            VideoWarning, stacklevel=3,
        )
    # Image files are written from RGB; video encoders take the decoded frames themselves.
    keep_source = not isinstance(sink, _FolderSink)
    dedup = DuplicateFilter(options.dedup) if options.dedup is not None else None

    writer: VideoWriter | SequenceWriter | None = None
    done = 0
    written = 0
    first_ts: int | None = None
    end_ts = 0
    try:
        with reader, Prefetcher(
            _links(reader, threshold, keep_source, dedup), depth=_PREFETCH, name="sepconv-decode"
        ) as frames:
            first = next(frames, None)  # InputError from the reader when nothing decodes
            second = next(frames, None)
            if first is None or second is None:
                raise InputError(
                    f"{src_path} has only one video frame; interpolation needs at least two"
                )
            first_ts = first[0].timestamp
            writer = sink.open(info, output_rate, schedule.time_base, options, copy_streams,
                               cut=getattr(reader, "cut", None))
            out = writer

            def encode(job: tuple[object, int, int]) -> None:
                image, pts, duration = job
                if isinstance(image, torch.Tensor):
                    image = _to_rgb(image, deep)
                out.write(image, pts, duration)

            # One pair's frames may wait for the encoder: at 4K each is a 100 MB tensor.
            with BackgroundConsumer(encode, depth=factor or 4, name="sepconv-encode") as encoder:

                def emit(pairs: list[tuple[Frame, Frame, Link]], arounds: list[Around]) -> None:
                    nonlocal done, written
                    if not pairs:
                        return
                    written += schedule.pairs(pairs, encoder.submit, arounds)
                    for _, b, _ in pairs:
                        # Input frames passed: more than one per pair where dedup dropped copies.
                        while done < b.index:
                            done += 1
                            if progress is not None:
                                progress(done, total)

                # Emit each batch as soon as it is full: memory holds one batch of pairs,
                # the previous frames and the short queues, whatever the length of the video.
                # For four-frame motion a pair waits for the frame after it (``held``).
                lookahead = schedule.reads_neighbours
                pending: list[tuple[Frame, Frame, Link]] = []
                arounds: list[Around] = []
                held, held_around = (first[0], second[0], second[1]), Around()
                if not lookahead:
                    pending.append(held)
                    arounds.append(held_around)
                before_last, last = first[0], second[0]
                while True:
                    if len(pending) >= options.batch_size:
                        emit(pending, arounds)
                        pending, arounds = [], []
                    item = next(frames, None)
                    if item is None:
                        break
                    frame, link = item
                    if lookahead:
                        if link is Link.BLEND:
                            held_around.after = frame
                        pending.append(held)
                        arounds.append(held_around)
                        # The new pair's frame before: the one before its first, if that pair blends.
                        held, held_around = (last, frame, link), Around(before_last if held[2] is Link.BLEND else None)
                    else:
                        pending.append((last, frame, link))
                        arounds.append(Around())
                    before_last, last = last, frame
                if lookahead:
                    pending.append(held)
                    arounds.append(held_around)
                emit(pending, arounds)

                # The last frame has no successor: repeated over its own duration. With
                # dedup the frame before it may be many frames back, so no guessing from it.
                if dedup is not None and last.duration is None and info.frame_rate:
                    last.duration = max(1, round(1 / (info.frame_rate * info.time_base)))
                count, end_ts = schedule.last(before_last, last, encoder.submit)
                encoder.finish()
            written += count
            done += 1
            if progress is not None:
                progress(done, total)
            skipped = reader.skipped_packets
            writer.close()
            sink.commit()
    except BaseException as error:
        sink.discard()
        if isinstance(sink, _PipeSink) and not isinstance(error, OutputClosed) and _is_broken_pipe(error):
            raise OutputClosed(
                f"the reader of {dst_path} closed it after {getattr(writer, 'frames_written', 0)} frame(s)"
            ) from None
        raise

    duration = float((end_ts - first_ts) * info.time_base)
    return InterpolationReport(
        input_path=src_path,
        output_path=dst_path,
        factor=factor,
        input_frames=done,
        output_frames=written,
        input_rate=info.frame_rate,
        output_rate=schedule.nominal_rate(info.frame_rate),
        input_duration=duration,
        output_duration=duration,
        cuts=schedule.cuts,
        skipped_packets=skipped,
        seconds=time.perf_counter() - started,
        pix_fmt=writer.pix_fmt,
        audio_copied=writer.audio_copied,
        audio_reencoded=writer.audio_reencoded,
        subtitles_copied=writer.subtitles_copied,
        duplicates=dedup.found if dedup is not None else None,
        codec=getattr(writer, "codec", ""),
        codec_chosen=getattr(writer, "codec_chosen", False),
        output_folder=isinstance(dst, ImageSequence),
    )
