"""Benchmark datasets read from their published layouts, as streams of triplets.

A benchmark turns a folder (or video files) the user already has into ``Triplet``s:
two input frames and the ground-truth frame between them, each an ``(H, W, 3)`` uint8
RGB array, with the time ``t`` of the ground truth (0 = first input, 1 = second; 0.5,
the midpoint, for every benchmark but ``video-thirds``). Nothing is downloaded. Without ``--data`` a benchmark looks in
``$SEPCONV_DATA/<name>`` when that variable is set, else in ``./data/<name>``; when its
data is not there, ``open_benchmark`` raises an ``InputError`` whose one line says
where to put it.

Layouts (``ROOT`` is the folder given with ``--data`` or the default above):

- ``seeyouagain``: a video file (``ROOT`` is the file, or a folder holding it). The KTH
  replication's protocol: every frame is resized to 960×540 (``cv2.INTER_AREA``;
  ``INTER_CUBIC`` for a smaller video) and one triplet of *consecutive* frames is
  taken every 30 frames, (30k, 30k+1, 30k+2); frame 30k+1 is predicted from its two
  neighbours. See ``SEEYOUAGAIN_NOTE`` for why we read "triplets at a distance of 30
  frames from each other" this way.
- ``middlebury``: ``ROOT/other-data/<seq>/frame10.png`` and ``frame11.png`` with
  ``ROOT/other-gt-interp/<seq>/frame10i11.png`` (the "other" set with public ground
  truth: 12 sequences).
- ``vimeo90k``: ``ROOT/tri_testlist.txt`` naming ``<a>/<b>`` folders under
  ``ROOT/sequences/``, each with ``im1.png``, ``im2.png`` (truth), ``im3.png``.
- ``ucf101``: the DVF test layout, ``ROOT/<id>/frame_00.png``, ``frame_01_gt.png``
  (truth), ``frame_02.png``.
- ``davis``: ``ROOT/JPEGImages/480p/<seq>/*.jpg`` (or ``ROOT`` the ``480p`` folder);
  every frame but a sequence's first and last is predicted from its two neighbours.
- ``video``: any video files (``--data`` repeatable; a folder means the videos in it):
  every odd frame is predicted from its even neighbours, (2k, 2k+1, 2k+2), so the
  inputs are half the frame rate and their motion twice the original's.
- ``video-thirds``: the any-time protocol on any video files (as ``video``): frames 3k
  and 3k+3 are the inputs, and frame 3k+1 is predicted at t = 1/3 and 3k+2 at t = 2/3,
  each scored against the real frame; the inputs are a third of the frame rate and their
  motion three times the original's. Only methods that predict at any t take part.

Files that a layout names but that are missing or unreadable do not stop a run: the
sample is reported as a ``Skip`` (with a reason) in the stream and counted.
Frames of deeper-than-8-bit videos are rounded to 8 bits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sepconv_cli.errors import InputError
from sepconv_cli.images import IMAGE_SUFFIXES, read_image

__all__ = [
    "BENCHMARKS",
    "DATA_ENV",
    "SEEYOUAGAIN_NOTE",
    "THIRDS",
    "Benchmark",
    "Dataset",
    "Sample",
    "Skip",
    "Triplet",
    "default_root",
    "open_benchmark",
    "read_image",
]

DATA_ENV = "SEPCONV_DATA"
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".wmv", ".flv", ".y4m"}
)
SEEYOUAGAIN_SIZE = (960, 540)
SEEYOUAGAIN_PERIOD = 30

SEEYOUAGAIN_NOTE = (
    "The KTH replication evaluates on 'See You Again' downsampled to 960x540, 'selecting triplets "
    "at a distance of 30 frames from each other' out of >5k frames. We read this as one triplet of "
    "consecutive frames (30k, 30k+1, 30k+2) every 30 frames, the middle one predicted: the scores it "
    "reports for Niklaus et al. (41.31 dB) are only possible for neighbouring frames, not for frames "
    "30 apart (a second of motion), and one triplet per second spreads ~170 samples over the video."
)


@dataclass(frozen=True)
class Triplet:
    """Two input frames and the ground truth between them, ``(H, W, 3)`` uint8 RGB each.

    ``sample`` names the sequence or video it comes from, ``frame`` the ground-truth
    frame within it (a file stem or a frame number), ``t`` its time between the inputs
    (0 = ``first``, 1 = ``second``).
    """

    sample: str
    frame: str
    first: np.ndarray
    second: np.ndarray
    truth: np.ndarray
    t: float = 0.5
    # The given frames one interval before ``first`` and after ``second`` (four-frame
    # motion), None where the protocol has none: an end, a shot cut, or a frame scored.
    before: np.ndarray | None = None
    after: np.ndarray | None = None


@dataclass(frozen=True)
class Skip:
    """A sample (or one triplet of it) that could not be read, and why."""

    sample: str
    reason: str


@dataclass(frozen=True)
class Sample:
    """One sequence of a benchmark: ``read()`` yields its triplets (or ``Skip``s) lazily.

    ``triplets`` is how many it should yield when every file is there (``None`` when
    unknown; for videos an estimate from the container, used for progress only); on
    ``video-thirds`` a "triplet" is one predicted frame, two per pair of inputs.
    """

    name: str
    triplets: int | None
    read: Callable[[], Iterator[Triplet | Skip]]


@dataclass(frozen=True)
class Dataset:
    """The samples found for a benchmark, in a fixed (natural-sort) order.

    ``times`` are the values of ``t`` its triplets hold, ``(0.5,)`` for a midpoint protocol.
    """

    benchmark: str
    roots: tuple[Path, ...]
    samples: tuple[Sample, ...]
    times: tuple[float, ...] = (0.5,)

    @property
    def any_time(self) -> bool:
        """Whether some ground truth lies elsewhere than the midpoint (only any-time methods take part)."""
        return any(t != 0.5 for t in self.times)

    @property
    def triplets(self) -> int | None:
        """How many triplets the samples promise, or ``None`` if any sample cannot say."""
        counts = [sample.triplets for sample in self.samples]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[arg-type]

    def items(self) -> Iterator[Triplet | Skip]:
        """Every triplet of every sample in order, with a ``Skip`` for each unreadable one."""
        for sample in self.samples:
            yield from sample.read()


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    layout: str  # where its data goes, for the "missing data" message
    find: Callable[[tuple[Path, ...]], list[Sample]]
    many_roots: bool = False
    times: tuple[float, ...] = (0.5,)


def natural_key(text: str) -> list[object]:
    """Sort key that puts ``seq2`` before ``seq10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _read_triplet(sample: str, frame: str, paths: tuple[Path, Path, Path]) -> Iterator[Triplet | Skip]:
    """One triplet from three image files ``(first, truth, second)``."""
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        yield Skip(sample, f"missing {', '.join(missing)}")
        return
    images = [read_image(p) for p in paths]
    unreadable = [p.name for p, image in zip(paths, images) if image is None]
    if unreadable:
        yield Skip(sample, f"unreadable {', '.join(unreadable)}")
        return
    first, truth, second = images
    if not first.shape == truth.shape == second.shape:  # type: ignore[union-attr]
        yield Skip(sample, "frames of different sizes")
        return
    yield Triplet(sample, frame, first, second, truth)  # type: ignore[arg-type]


def _image_triplet(sample: str, frame: str, first: Path, truth: Path, second: Path) -> Sample:
    return Sample(sample, 1, lambda: _read_triplet(sample, frame, (first, truth, second)))


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)) if folder.is_dir() else []


# --- image benchmarks --------------------------------------------------------------------------


def _find_middlebury(roots: tuple[Path, ...]) -> list[Sample]:
    root = roots[0]
    data, truth = root / "other-data", root / "other-gt-interp"
    if not data.is_dir() and not truth.is_dir():
        raise InputError(f"{root} has neither other-data/ nor other-gt-interp/ (the Middlebury 'other' layout)")
    names = sorted({p.name for p in _subdirs(data)} | {p.name for p in _subdirs(truth)}, key=natural_key)
    return [
        _image_triplet(name, "frame10i11", data / name / "frame10.png", truth / name / "frame10i11.png", data / name / "frame11.png")
        for name in names
    ]


def _find_vimeo90k(roots: tuple[Path, ...]) -> list[Sample]:
    root = roots[0]
    listing = root / "tri_testlist.txt"
    if not listing.is_file():
        raise InputError(f"{root} has no tri_testlist.txt (the Vimeo-90k triplet layout)")
    try:
        lines = listing.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {listing}: {exc}") from None
    samples = []
    for line in lines:
        folder = root / "sequences" / line.strip("/")
        samples.append(_image_triplet(line.strip("/"), "im2", folder / "im1.png", folder / "im2.png", folder / "im3.png"))
    return samples


def _find_ucf101(roots: tuple[Path, ...]) -> list[Sample]:
    root = roots[0]
    return [
        _image_triplet(d.name, "frame_01_gt", d / "frame_00.png", d / "frame_01_gt.png", d / "frame_02.png")
        for d in _subdirs(root)
    ]




def _sequence_triplets(sample: str, paths: list[Path]) -> Iterator[Triplet | Skip]:
    """Sliding triplets (i-1, i, i+1) over an image sequence, each image read once."""
    window: list[tuple[Path, np.ndarray | None]] = []
    for path in paths:
        window = [*window[-2:], (path, read_image(path))]
        if len(window) < 3:
            continue
        (p1, a), (pt, t), (p2, b) = window
        if a is None or t is None or b is None:
            bad = sorted({p.name for p, image in window if image is None})
            yield Skip(sample, f"{pt.stem}: unreadable {', '.join(bad)}")
        elif not a.shape == t.shape == b.shape:
            yield Skip(sample, f"{pt.stem}: frames of different sizes")
        else:
            yield Triplet(sample, pt.stem, a, b, t)


def _find_davis(roots: tuple[Path, ...]) -> list[Sample]:
    root = roots[0]
    frames_root = root / "JPEGImages" / "480p"
    if not frames_root.is_dir():
        if root.name == "480p":
            frames_root = root
        else:
            raise InputError(f"{root} has no JPEGImages/480p/ (the DAVIS layout)")
    samples = []
    for folder in _subdirs(frames_root):
        paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))
        if len(paths) < 3:
            reason = f"only {len(paths)} frame(s); a triplet needs 3"
            samples.append(Sample(folder.name, 0, lambda name=folder.name, why=reason: iter([Skip(name, why)])))
            continue
        samples.append(Sample(folder.name, len(paths) - 2, lambda name=folder.name, p=paths: _sequence_triplets(name, p)))
    return samples


# --- video benchmarks --------------------------------------------------------------------------


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    return np.clip(np.rint(rgb.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _video_triplets(
    sample: str, path: Path, period: int, size: tuple[int, int] | None
) -> Iterator[Triplet | Skip]:
    """Triplets (k·period, k·period+1, k·period+2) of a video, decoded as a stream."""
    import cv2

    from sepconv_cli.video import FrameReader

    def prepare(rgb: np.ndarray) -> np.ndarray:
        rgb = _to_uint8(rgb)
        if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
            shrink = rgb.shape[1] >= size[0] and rgb.shape[0] >= size[1]
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        return rgb

    def given(j: int) -> bool:  # a frame no triplet scores (a method may see it)
        return (j - 1) % period != 0

    held: dict[int, np.ndarray] = {}
    waiting: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (first index, first, second, truth)
    try:
        with FrameReader(path) as reader:
            for frame in reader:
                i = frame.index
                if not any(i >= d and (i - d) % period == 0 for d in (0, 1, 2)) and not given(i):
                    continue  # not part of any triplet: decoded, never converted
                held = {j: image for j, image in held.items() if j >= i - 6}
                held[i] = prepare(frame.rgb)
                # A triplet waits for the frame after its second input (two frames on).
                while waiting and waiting[0][0] + 4 <= i:
                    yield _with_neighbours(sample, str(waiting[0][0] + 1), *waiting.pop(0), held, given)
                if i >= 2 and (i - 2) % period == 0 and i - 1 in held and i - 2 in held:
                    waiting.append((i - 2, held[i - 2], held[i], held[i - 1]))
            for entry in waiting:
                yield _with_neighbours(sample, str(entry[0] + 1), *entry, held, given)
    except InputError as exc:
        yield Skip(sample, str(exc))


def _with_neighbours(sample: str, name: str, start: int, first: np.ndarray, second: np.ndarray, truth: np.ndarray,
                     held: dict[int, np.ndarray], given: Callable[[int], bool], step: int = 2,
                     t: float = 0.5) -> Triplet:
    """The triplet of inputs ``start`` and ``start + step``, with the given frames one step
    outside them where they exist in the same shot."""
    from sepconv_cli.scenes import is_cut

    before, after = held.get(start - step), held.get(start + 2 * step)
    if before is not None and (not given(start - step) or before.shape != first.shape or is_cut(before, first)):
        before = None
    if after is not None and (not given(start + 2 * step) or after.shape != second.shape or is_cut(second, after)):
        after = None
    return Triplet(sample, name, first, second, truth, t, before, after)


THIRDS = (1 / 3, 2 / 3)


def _video_thirds(sample: str, path: Path) -> Iterator[Triplet | Skip]:
    """Frames 3k+1 (t = 1/3) and 3k+2 (t = 2/3) of a video, each from frames 3k and 3k+3
    (with frames 3k−3 and 3k+6 around them, for four-frame motion)."""
    from sepconv_cli.video import FrameReader

    def given(j: int) -> bool:
        return j % 3 == 0

    held: dict[int, np.ndarray] = {}
    waiting: list[int] = []  # first indices of groups whose frame 3k+6 has not come yet

    def group(start: int) -> Iterator[Triplet]:
        for k, t in zip((1, 2), THIRDS):
            yield _with_neighbours(sample, str(start + k), start, held[start], held[start + 3], held[start + k],
                                   held, given, step=3, t=t)

    try:
        with FrameReader(path) as reader:
            for frame in reader:
                i = frame.index
                held[i] = _to_uint8(frame.rgb)
                held = {j: image for j, image in held.items() if j >= i - 9}
                while waiting and waiting[0] + 6 <= i:
                    yield from group(waiting.pop(0))
                if given(i) and i >= 3 and all(j in held for j in range(i - 3, i)):
                    waiting.append(i - 3)
            for start in waiting:
                yield from group(start)
    except InputError as exc:
        yield Skip(sample, str(exc))


def _video_sample(name: str, path: Path, period: int, size: tuple[int, int] | None, explicit: bool,
                  thirds: bool = False) -> Sample:
    from sepconv_cli.video import probe

    try:
        info = probe(path)
    except InputError as exc:
        if explicit:
            raise
        reason = str(exc)
        return Sample(name, 0, lambda: iter([Skip(name, reason)]))
    frames = info.frames
    if frames is None and info.duration and info.frame_rate:
        frames = round(info.duration * float(info.frame_rate))  # Matroska does not count frames
    if thirds:
        count = None if frames is None else 2 * max(0, (frames - 1) // 3)
        return Sample(name, count, lambda: _video_thirds(name, path))
    count = None if frames is None else (0 if frames < 3 else (frames - 3) // period + 1)
    return Sample(name, count, lambda: _video_triplets(name, path, period, size))


def _video_files(roots: tuple[Path, ...]) -> list[tuple[Path, bool]]:
    files: list[tuple[Path, bool]] = []
    for root in roots:
        if root.is_dir():
            found = sorted(
                (p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES),
                key=lambda p: natural_key(p.name),
            )
            files.extend((p, False) for p in found)
        else:
            files.append((root, True))
    return files


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def _find_videos(
    period: int, size: tuple[int, int] | None, thirds: bool = False
) -> Callable[[tuple[Path, ...]], list[Sample]]:
    def find(roots: tuple[Path, ...]) -> list[Sample]:
        files = _video_files(roots)
        names = _unique_names([p for p, _ in files])
        return [_video_sample(name, path, period, size, explicit, thirds) for name, (path, explicit) in zip(names, files)]

    return find


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "seeyouagain",
            "'See You Again' video at 960x540, a triplet of consecutive frames every 30 frames (KTH protocol)",
            "put the 'See You Again' music video (any video file) in that folder",
            _find_videos(SEEYOUAGAIN_PERIOD, SEEYOUAGAIN_SIZE),
        ),
        Benchmark(
            "middlebury",
            "Middlebury 'other' set: frame10 + frame11 -> frame10i11",
            "unpack Middlebury's other-color-twoframes.zip and other-gt-interp.zip there "
            "(other-data/<seq>/frame10.png, other-gt-interp/<seq>/frame10i11.png)",
            _find_middlebury,
        ),
        Benchmark(
            "vimeo90k",
            "Vimeo-90k triplet test set: im1 + im3 -> im2",
            "unpack vimeo_triplet there (tri_testlist.txt and sequences/<a>/<b>/im1.png..im3.png)",
            _find_vimeo90k,
        ),
        Benchmark(
            "ucf101",
            "UCF101 triplets in the DVF layout: frame_00 + frame_02 -> frame_01_gt",
            "unpack the DVF UCF101 test set there (<id>/frame_00.png, frame_01_gt.png, frame_02.png)",
            _find_ucf101,
        ),
        Benchmark(
            "davis",
            "DAVIS 480p sequences: every inner frame from its two neighbours",
            "unpack DAVIS there (JPEGImages/480p/<seq>/00000.jpg, ...)",
            _find_davis,
        ),
        Benchmark(
            "video",
            "your own videos: every odd frame from its even neighbours (motion doubled)",
            "put video files in that folder",
            _find_videos(2, None),
            many_roots=True,
        ),
        Benchmark(
            "video-thirds",
            "your own videos, any-time protocol: frames 3k+1 and 3k+2 at t = 1/3 and 2/3 from frames 3k and 3k+3",
            "put video files in that folder",
            _find_videos(3, None, thirds=True),
            many_roots=True,
            times=THIRDS,
        ),
    )
}


def default_root(benchmark: str) -> Path:
    """``$SEPCONV_DATA/<benchmark>`` if ``SEPCONV_DATA`` is set, else ``./data/<benchmark>``."""
    base = os.environ.get(DATA_ENV)
    return (Path(base) if base else Path("data")) / benchmark


def open_benchmark(name: str, data: list[Path] | tuple[Path, ...] | None = None) -> Dataset:
    """Find the samples of benchmark ``name`` under ``data`` (default: ``default_root(name)``).

    Raises ``InputError`` (one line) when the data is missing, has the wrong layout, or
    holds no sample; missing files *inside* a found dataset become ``Skip``s instead.
    """
    try:
        benchmark = BENCHMARKS[name]
    except KeyError:
        raise InputError(f"unknown benchmark '{name}' (known: {', '.join(BENCHMARKS)})") from None
    roots = tuple(Path(p) for p in data) if data else (default_root(name),)
    if len(roots) > 1 and not benchmark.many_roots:
        raise InputError(f"--data is given {len(roots)} times; the {name} benchmark reads one folder")
    for root in roots:
        if not root.exists():
            if data:
                raise InputError(f"--data {root} does not exist")
            raise InputError(f"no {name} data at {root}: {benchmark.layout} (or set ${DATA_ENV}, or pass --data PATH)")
    samples = benchmark.find(roots)
    if not samples:
        place = ", ".join(str(r) for r in roots)
        raise InputError(f"found no {name} samples in {place}: {benchmark.layout}")
    return Dataset(name, roots, tuple(samples), benchmark.times)
