"""Where the output goes, and the checks on both ends made before any work.

A video file or a frame folder is written under a hidden temporary name beside its
destination and renamed into place only when complete (``FileSink``, ``FolderSink``), so
a failed or interrupted run leaves the destination as it was; a stream (``PipeSink``)
cannot be renamed and just ends early. ``check_paths`` refuses, before anything is
decoded, an input or output that could not be used.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from sepconv_cli.errors import InputError, OutputClosed, OutputError
from sepconv_cli.sequences import ImageSequence, SequenceWriter
from sepconv_cli.timespan import Cut
from sepconv_cli.video import PIPE_FORMATS, Pipe, VideoWarning, VideoWriter
from sepconv_cli.video_types import VideoInfo

# Where frames come from and go to: a video file, numbered images, or a stream (stdin/stdout).
Source = str | Path | ImageSequence | Pipe
Destination = str | Path | ImageSequence | Pipe


class EncoderSettings(Protocol):
    """What a sink reads of ``pipeline.VideoOptions``, named here because importing that
    would tie this module and the pipeline, which imports it, into a cycle."""

    @property
    def codec(self) -> str | None: ...
    @property
    def crf(self) -> int: ...
    @property
    def preset(self) -> str: ...
    @property
    def lossless(self) -> bool: ...
    @property
    def codec_options(self) -> dict[str, str]: ...


# -- checks ------------------------------------------------------------------------


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


def temp_path(dst: Path) -> Path:
    """A hidden name beside ``dst``, new for each run, so two runs never share one."""
    return dst.with_name(f".{dst.stem}.partial-{secrets.token_hex(4)}{dst.suffix}")


# -- sinks -------------------------------------------------------------------------


class FileSink:
    """A video file, written under a hidden temporary name and renamed when complete."""

    def __init__(self, dst: Path) -> None:
        self.dst = dst
        self.tmp = temp_path(dst)
        self.writer: VideoWriter | None = None

    def open(self, info: VideoInfo, rate: Fraction | None, time_base: Fraction, options: EncoderSettings,
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


class FolderSink:
    """A frame folder, filled under a hidden temporary name beside it and renamed into
    place when complete (an old folder of frames, with ``overwrite``, is swapped out and
    deleted only then)."""

    def __init__(self, dst: ImageSequence) -> None:
        self.dst = dst
        folder = dst.folder.resolve()
        self.folder = folder
        self.tmp = folder.with_name(f".{folder.name}.partial-{secrets.token_hex(4)}")

    def open(self, info: VideoInfo, rate: Fraction | None, time_base: Fraction, options: EncoderSettings,
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


class PipeSink:
    """A stream (stdout): no temporary name is possible, so a failure just ends it
    early; the reader sees a cut stream, never a file to mistake for a finished one."""

    def __init__(self, dst: Pipe) -> None:
        self.dst = dst
        self.writer: VideoWriter | None = None

    def open(self, info: VideoInfo, rate: Fraction | None, time_base: Fraction, options: EncoderSettings,
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


def is_broken_pipe(error: BaseException) -> bool:
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


# Any of the three: they share open, commit and discard.
Sink = FileSink | FolderSink | PipeSink


def open_sink(dst: Destination) -> tuple[Sink, Path]:
    """The sink for ``dst`` and the path that names it in the report."""
    if isinstance(dst, ImageSequence):
        return FolderSink(dst), dst.folder  # the folder names the output, not its file pattern
    if isinstance(dst, Pipe):
        return PipeSink(dst), Path(dst.name)
    return FileSink(Path(dst)), Path(dst)
