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
still holds a few frames, whatever the length of the video. With a four-frame FlowSep
the stream also reads one batch ahead and announces it, so the engine computes its DIS
flows in a background thread while the batch before it runs the network (``pairing``).

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

This module is the streaming loop; which frame goes out when is ``schedules``, the
output sinks and the checks of both ends are ``sinks`` (their public names importable
from here too).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from sepconv_cli import scenes
from sepconv_cli.duplicates import DuplicateFilter
from sepconv_cli.errors import InputError, OutputClosed
from sepconv_cli.overlap import BackgroundConsumer, Prefetcher
from sepconv_cli.pairing import emit_pairs
from sepconv_cli.schedules import (
    At, Link, Midpoint, Multiplying, Retiming, Schedule, format_rate, midpoint_factor, output_time_base, to_rgb,
)
from sepconv_cli.sequences import ImageSequence, SequenceReader, SequenceWriter
from sepconv_cli.sinks import Destination, FolderSink, PipeSink, Source, check_paths, is_broken_pipe, open_sink
from sepconv_cli.timespan import TimeSpan
from sepconv_cli.video import FrameReader, Pipe, PipeReader, VideoWarning, VideoWriter, probe
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

Progress = Callable[[int, "int | None"], None]

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
        rate_in = format_rate(self.input_rate)
        rate_out = format_rate(self.output_rate)
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
        src, dst, lambda info: Multiplying(midpoint, options.factor, info.time_base, options.batch_size),
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

        def schedule(info: VideoInfo) -> Retiming:
            if not info.frame_rate:
                raise InputError(f"{info.path} states no frame rate to derive the output's from; give a rate")
            return Retiming(at, _exact_rate(of_input(info.frame_rate)), info.time_base, options.batch_size)
    else:
        exact = _exact_rate(rate)

        def schedule(info: VideoInfo) -> Retiming:
            return Retiming(at, exact, info.time_base, options.batch_size)

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


class _Tally:
    """Input frames passed and output frames written so far; ``progress(done, total)``
    hears of every input frame passed."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self.written = 0

    def batch(self, pairs: list[tuple[Frame, Frame, Link]], written: int) -> None:
        """A batch of pairs is done, ``written`` output frames for it."""
        self.written += written
        for _, b, _ in pairs:
            self.passed(b.index)

    def passed(self, index: int) -> None:
        """Every input frame before ``index`` is done (more than one at a time where dedup dropped copies)."""
        while self.done < index:
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)


def _expected_frames(info: VideoInfo) -> int | None:
    """The input's frame count for progress: the container's, else estimated from its
    duration (e.g. Matroska), else None."""
    if info.frames is None and info.duration and info.frame_rate:
        return max(2, round(info.duration * info.frame_rate))
    return info.frames


def _process(
    src: Source,
    dst: Destination,
    make_schedule: Callable[..., Schedule],
    *,
    options: VideoOptions,
    progress: Progress | None,
    factor: int | None,
) -> InterpolationReport:
    """Decode ``src``, let the schedule turn input frame pairs into timed output frames,
    encode them to ``dst`` (see ``interpolate_video``). Its warnings, and ``sink.open``'s,
    name the caller of ``interpolate_video``: moved deeper, their ``stacklevel`` must grow."""
    started = time.perf_counter()
    if options.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {options.batch_size}")
    check_paths(src, dst, options.overwrite)
    reader, src_path = _open_source(src, options.span, options.deinterlace)
    info = reader.info
    sink, dst_path = open_sink(dst)
    schedule = make_schedule(info)
    tally = _Tally(progress, _expected_frames(info))
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
    keep_source = not isinstance(sink, FolderSink)
    dedup = DuplicateFilter(options.dedup) if options.dedup is not None else None

    writer: VideoWriter | SequenceWriter | None = None
    try:
        with reader, Prefetcher(
            _links(reader, options.scene_threshold, keep_source, dedup), depth=_PREFETCH, name="sepconv-decode"
        ) as frames:
            first, second = _first_pair(frames, src_path)
            first_ts = first[0].timestamp
            writer = sink.open(info, output_rate, schedule.time_base, options, copy_streams,
                               cut=getattr(reader, "cut", None))
            end_ts = _encode_all(frames, first, second, schedule, writer, tally, info,
                                 batch_size=options.batch_size, depth=factor or 4, dedup=dedup is not None)
            skipped = reader.skipped_packets
            writer.close()
            sink.commit()
    except BaseException as error:
        sink.discard()
        if isinstance(sink, PipeSink) and not isinstance(error, OutputClosed) and is_broken_pipe(error):
            raise OutputClosed(
                f"the reader of {dst_path} closed it after {getattr(writer, 'frames_written', 0)} frame(s)"
            ) from None
        raise

    duration = float((end_ts - first_ts) * info.time_base)
    return InterpolationReport(
        input_path=src_path,
        output_path=dst_path,
        factor=factor,
        input_frames=tally.done,
        output_frames=tally.written,
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


def _first_pair(frames: Iterator[tuple[Frame, Link]], src_path: Path) -> tuple[tuple[Frame, Link], tuple[Frame, Link]]:
    first = next(frames, None)  # InputError from the reader when nothing decodes
    second = next(frames, None)
    if first is None or second is None:
        raise InputError(f"{src_path} has only one video frame; interpolation needs at least two")
    return first, second


def _encode_all(
    frames: Iterator[tuple[Frame, Link]],
    first: tuple[Frame, Link],
    second: tuple[Frame, Link],
    schedule: Schedule,
    writer: VideoWriter | SequenceWriter,
    tally: _Tally,
    info: VideoInfo,
    *,
    batch_size: int,
    depth: int,
    dedup: bool,
) -> int:
    """Every frame from ``first`` on through the schedule to ``writer``, which encodes in a
    background thread; returns where the output ends, in the input's time base units."""
    deep = info.bit_depth > 8

    def encode(job: tuple[object, int, int]) -> None:
        image, pts, duration = job
        if isinstance(image, torch.Tensor):
            image = to_rgb(image, deep)
        writer.write(image, pts, duration)

    # One pair's frames may wait for the encoder (``depth``): at 4K each is a 100 MB tensor.
    with BackgroundConsumer(encode, depth=depth, name="sepconv-encode") as encoder:
        before_last, last = emit_pairs(frames, first, second, schedule, encoder.submit, batch_size, tally.batch)
        # The last frame has no successor: repeated over its own duration. With
        # dedup the frame before it may be many frames back, so no guessing from it.
        if dedup and last.duration is None and info.frame_rate:
            last.duration = max(1, round(1 / (info.frame_rate * info.time_base)))
        count, end_ts = schedule.last(before_last, last, encoder.submit)
        encoder.finish()
    tally.written += count
    tally.passed(tally.done + 1)
    return end_ts
