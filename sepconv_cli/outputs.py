"""What a run reads and writes, named from what the user typed: the inputs SOURCE...
names (a video, frames, a folder of videos), each input's output (``clip.2x.mp4``,
``shot.2x/``, or in a folder for a batch), and the folders made for them.

Nothing here reads or writes video: ``sinks.check_paths`` checks the planned paths and
the pipeline writes them. Bad requests raise ``errors.UsageError`` (exit code 2) with
the message the command shows.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from sepconv_cli.errors import InputError, OutputError, UsageError
from sepconv_cli.images import IMAGE_SUFFIXES
from sepconv_cli.sequences import DEFAULT_PATTERN, WRITABLE_SUFFIXES, ImageSequence, list_frames, natural_key
from sepconv_cli.sinks import Destination
from sepconv_cli.video import PIPE_FORMATS, Pipe

Input = Path | ImageSequence | Pipe
Job = tuple[Input, Destination]

VIDEO_SUFFIXES = frozenset({
    ".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
    ".ogv", ".3gp", ".y4m", ".nut", ".mxf",
})


def format_rate(rate: Fraction) -> str:
    """``60``, ``59.94``: short enough for a file name (three decimals at most)."""
    if rate.denominator == 1:
        return str(rate.numerator)
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")


def display_name(target: Input | Destination) -> str:
    """The name an input or output goes by in messages: a file's or a frame folder's name."""
    return target.name if isinstance(target, (Path, Pipe)) else target.name.rstrip("/\\")


def default_output(source: Path | ImageSequence, factor: int, lossless: bool, fps: Fraction | None = None) -> Destination:
    """``clip.mp4`` → ``clip.2x.mp4``; a frame folder ``shot/`` → ``shot.2x/`` (same names)."""
    tag = f"{format_rate(fps)}fps" if fps is not None else f"{factor}x"
    if isinstance(source, ImageSequence):
        folder = source.folder.resolve()
        pattern = source.pattern
        if pattern is None:
            try:
                suffix = list_frames(source)[0].suffix.lower()
            except InputError:
                suffix = ".png"  # the run itself reports what is wrong with the frames
            # JPEG in: PNG out, so the new frames are not compressed a second time.
            pattern = DEFAULT_PATTERN if suffix not in WRITABLE_SUFFIXES or suffix in (".jpg", ".jpeg") \
                else DEFAULT_PATTERN.replace(".png", suffix)
        return ImageSequence(folder.with_name(f"{folder.name}.{tag}"), pattern)
    suffix = ".mkv" if lossless else source.suffix or ".mp4"
    return source.with_name(f"{source.stem}.{tag}{suffix}")


def has_images(folder: Path) -> bool:
    """Whether ``folder`` holds image files (frames), hidden ones aside."""
    try:
        return any(p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") for p in folder.iterdir())
    except OSError:
        return False


def resolve_source(text: str, input_fps: Fraction) -> Path | ImageSequence:
    """What SOURCE names: a frame pattern (``%`` in the file name), a folder of frames,
    or a video file."""
    path = Path(text)
    if "%" in path.name:
        return ImageSequence.parse(text, input_fps)
    if path.is_dir():
        if has_images(path):
            return ImageSequence(path, None, input_fps)
        raise InputError(f"no image files in the folder {path}; give frames (.png, .tif, .jpg) or a video file")
    return path


def resolve_output(text: str) -> Destination:
    """What ``--out`` names: a frame pattern, a folder for frames (an existing one, a name
    ending in a slash, or a name without an extension), or a video file."""
    path = Path(text)
    if "%" in path.name or "%" in str(path.parent):
        try:
            return ImageSequence.parse(text)
        except InputError as error:
            raise UsageError(f"--out {text}: {error}") from None
    if text.endswith(("/", "\\")) or path.is_dir() or not path.suffix:
        return ImageSequence(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise UsageError(
            f"--out {text}: for image frames give a pattern such as {path.parent / ('%06d' + path.suffix)} "
            "or a folder"
        )
    return path


def videos_in(folder: Path) -> list[Path]:
    """The video files in ``folder``, in natural order (``clip2`` before ``clip10``)."""
    try:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return []
    return sorted((p for p in files if p.suffix.lower() in VIDEO_SUFFIXES), key=lambda p: natural_key(p.name))


def expand_sources(texts: tuple[str, ...], input_fps: Fraction) -> tuple[list[Path | ImageSequence], bool]:
    """The inputs SOURCE... names and whether this is a batch (one output each): several
    SOURCEs, or a folder holding videos rather than frames (its videos, in natural order)."""
    inputs: list[Path | ImageSequence] = []
    batch = len(texts) > 1
    for text in texts:
        path = Path(text)
        if "%" not in path.name and path.is_dir() and not has_images(path):
            videos = videos_in(path)
            if not videos:
                raise InputError(f"no frames or videos in the folder {path}")
            inputs.extend(videos)
            batch = True
        else:
            inputs.append(resolve_source(text, input_fps))
    return inputs, batch


def _batch_folder(output: str | None) -> Path | None:
    """The folder ``--out`` names for a batch's outputs (None: beside each input)."""
    if output is None:
        return None
    folder = Path(output)
    # A trailing slash names a folder, whatever its name looks like ("clips.60/").
    named_folder = output.endswith(("/", "\\"))
    if output == "-" or "%" in output or (folder.suffix and not named_folder and not folder.is_dir()):
        raise UsageError(f"--out {output}: several inputs need a folder for their outputs (e.g. --out done/)")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {output} is a file; several inputs need a folder")
    return folder


def plan_outputs(
    inputs: list[Input], output: str | None, batch: bool, factor: int, lossless: bool,
    fps: Fraction | None, stream_format: str | None,
) -> list[Job]:
    """Each input with its output: the one OUT, or in a batch one per input in the folder
    OUT (created if missing) or beside the input, named as the default output is."""
    if not batch:
        src = inputs[0]
        if output == "-":
            return [(src, Pipe(None, PIPE_FORMATS[stream_format or "y4m"], "stdout"))]
        return [(src, resolve_output(output) if output is not None else default_output(src, factor, lossless, fps))]
    folder = _batch_folder(output)
    jobs: list[Job] = []
    seen: dict[str, str] = {}
    for src in inputs:
        dst = default_output(src, factor, lossless, fps)
        if folder is not None:
            dst = folder / dst.name if isinstance(dst, Path) else ImageSequence(folder / dst.folder.name, dst.pattern)
        key = str(Path(dst if isinstance(dst, Path) else dst.folder).absolute())
        if key in seen:
            raise UsageError(f"{seen[key]} and {display_name(src)} would both be written to {key}")
        seen[key] = display_name(src)
        jobs.append((src, dst))
    return jobs


def output_parent(dst: Destination) -> Path | None:
    """The folder an output is written into (a frame folder's parent); None for a stream."""
    if isinstance(dst, Pipe):
        return None
    if isinstance(dst, ImageSequence):
        return dst.folder.absolute().parent
    return Path(dst).absolute().parent


def make_folders(folder: Path | None) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those made, outermost first."""
    missing: list[Path] = []
    current = folder
    while current is not None and not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    missing.reverse()
    for index, path in enumerate(missing):
        try:
            path.mkdir()
        except OSError as exc:
            remove_empty(missing[:index])
            raise OutputError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders ``make_folders`` made, innermost first, as long as they are empty."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            return  # not empty (the output is in it) or already gone
