"""Training triplets from real footage: ``sepconv prepare SOURCE``.

Sources (``find_sequences``):

- a DAVIS 2016/2017 root (``JPEGImages/480p/<sequence>/*.jpg``; ``Full-Resolution`` when
  there is no ``480p``; the ``Annotations`` masks are ignored),
- any folder of image sequences (every folder holding images is one sequence, its
  frames in name order; images directly in SOURCE make one sequence),
- a video file or a folder of videos (each video is one sequence, decoded with
  ``sepconv_cli.video``).

For every triplet of frames ``(i, i + s, i + 2s)`` (``s`` = stride) that does not
straddle a shot cut (``scenes.is_cut`` between either neighbouring pair), random S x S
windows are tried and up to ``patches`` of them kept. The selection follows the
SepConv/KTH recipe of favouring moving content, with the optical flow of SimpleFlow
(``cv2.optflow.calcOpticalFlowSF``) from the first to the third frame:

    m = mean over the window of |flow(F0 -> F2)|      (pixels at full resolution)
    static window  if  m < 0.5 px  or  mean |F2 - F0| < 2 grey levels   -> rejected
    (SimpleFlow leaves NaN where it finds no match: m averages the defined pixels,
     and a window where fewer than half are defined is rejected)
    otherwise kept with probability  p(m) = 1 - exp(-m / 4 px)

so a window moving 1 px between the outer frames is kept 22 % of the time, 4 px 63 %,
10 px 92 %. At most ``4 * patches`` windows are tried per triplet. The flow is computed
on a copy of the frames whose long side is at most 256 px (SimpleFlow costs ~4 s for a
480p pair, ~0.3 s at that size) and scaled back; at that size SimpleFlow's 3-level
pyramid follows motions up to roughly 40 px at 480p. The selection itself is in
``selection.py``.

Each kept patch is stored as a five-frame window (cache format version 2): the triplet
and, at the same window, the frames ``i - s`` and ``i + 3s`` for models that use the
motion before and after the pair, each replaced by a copy of the adjacent triplet frame
and flagged where it is missing (the sequence ends) or across a shot cut.
``SelectionParams(windows=False)`` (``--triplets``) writes version-1 triplets instead.

Everything random comes from a generator seeded with ``(seed, sequence name, triplet
start)``, and work is written in a fixed order, so the cache bytes depend on the
source, the parameters and the seed only: not on the number of workers, nor on whether
the run was interrupted and resumed (see ``cache.py``).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sepconv_cli.data.cache import (
    BOTH,
    HISTOGRAM_NAME,
    INDEX_NAME,
    TRIPLET_VERSION,
    WINDOW_VERSION,
    CacheIndex,
    UnitRecord,
    read_index,
    write_index,
    write_shard,
)
from sepconv_cli.data.selection import (  # noqa: F401 - SelectionParams and keep_probability are public here
    HIST_BIN_PX,
    HIST_BINS,
    SelectionParams,
    UnitResult,
    UnitTask,
    hist_bin,
    keep_probability,
    process_unit,
)
from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv", ".y4m"}
)

# Called after each finished unit with (triplets done, total triplets or None if unknown).
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Sequence:
    """One source of consecutive frames: a list of image files or one video file."""

    name: str
    kind: str  # "images" or "video"
    paths: tuple[Path, ...]  # the frames (images) or the video file (one path)


def find_sequences(source: str | Path) -> list[Sequence]:
    """Every image sequence and video under ``source``, in a fixed (sorted) order."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source} does not exist")
    if source.is_file():
        if source.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"{source} is not a video file or a folder of frames or videos")
        return [Sequence(source.stem, "video", (source,))]
    root = source
    davis = source / "JPEGImages"
    if davis.is_dir():
        for sub in ("480p", "Full-Resolution"):
            if (davis / sub).is_dir():
                root = davis / sub
                break
        else:
            root = davis
    sequences: list[Sequence] = []
    try:
        for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
            files = sorted(p for p in folder.iterdir() if p.is_file())
            images = tuple(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
            name = folder.relative_to(root).as_posix()
            if images:
                sequences.append(Sequence(name if name != "." else root.name, "images", images))
            for video in (p for p in files if p.suffix.lower() in VIDEO_SUFFIXES):
                vname = (folder.relative_to(root) / video.stem).as_posix()
                sequences.append(Sequence(vname, "video", (video,)))
    except OSError as exc:
        raise InputError(f"cannot list {source}: {exc.strerror or exc}") from None
    if not sequences:
        raise InputError(f"no image sequences or videos found in {source}")
    return sequences


# --------------------------------------------------------------------------------------
# Planning the units and running them


def _video_frame_count(path: Path) -> int | None:
    """Frame count from the container header (for the progress bar only), or None."""
    from sepconv_cli.video import probe

    try:
        return probe(path).frames or None
    except InputError:
        return None


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    # 10-/12-/16-bit video: keep the top 8 bits, rounded.
    return np.clip((rgb.astype(np.uint32) + 128) >> 8, 0, 255).astype(np.uint8)


class _Planner:
    """Turns sequences into numbered ``UnitTask``s, counting sequence-level problems."""

    def __init__(self, sequences: list[Sequence], params: SelectionParams, done: set[int]) -> None:
        self.sequences = sequences
        self.params = params
        self.done = done
        self.counts = {"sequences": 0, "short_sequences": 0, "unreadable_videos": 0}
        self.problems: list[str] = []
        self.skipped_triplets = 0  # triplets of units finished in an earlier run

    def total_triplets(self) -> int | None:
        total = 0
        span = 2 * self.params.stride
        for seq in self.sequences:
            n = len(seq.paths) if seq.kind == "images" else _video_frame_count(seq.paths[0])
            if n is None:
                return None
            total += max(0, n - span)
        return total

    def tasks(self) -> Iterator[UnitTask]:
        number = 0
        p = self.params
        span = 2 * p.stride
        for seq in self.sequences:
            self.counts["sequences"] += 1
            if seq.kind == "images":
                n = len(seq.paths)
                if n < span + 1:
                    self.counts["short_sequences"] += 1
                    self.problems.append(f"sequence {seq.name} has {n} frame(s), needs {span + 1}")
                    continue
                starts = list(range(n - span))
                for b in range(0, len(starts), p.triplets_per_unit):
                    block = starts[b : b + p.triplets_per_unit]
                    if number in self.done:
                        self.skipped_triplets += len(block)
                    else:
                        lo = max(0, block[0] - p.margin)
                        frames = list(seq.paths[lo : min(n, block[-1] + span + p.margin + 1)])
                        yield UnitTask(number, seq.name, lo, block, frames, p)
                    number += 1
            else:
                number = yield from self._video_tasks(seq, number)

    def _video_tasks(self, seq: Sequence, number: int) -> Iterator[UnitTask]:
        from sepconv_cli.video import iter_frames

        p = self.params
        span, per_unit = 2 * p.stride, p.triplets_per_unit
        buffer: deque[np.ndarray] = deque()
        base = 0  # frame index of buffer[0]
        first = 0  # first triplet start of the next unit
        seen = 0
        try:
            for frame in iter_frames(seq.paths[0]):
                buffer.append(_to_uint8(frame.rgb))
                seen += 1
                # A full unit ends with its last triplet's frames and, with windows, the
                # frame after them; it also keeps ``margin`` frames before its first.
                if seen == first + per_unit + span + p.margin:
                    task = self._video_unit(seq, number, buffer, base, first, per_unit)
                    number += 1
                    if task is not None:
                        yield task
                    first += per_unit
                    while base < first - p.margin:
                        buffer.popleft()
                        base += 1
        except InputError as exc:
            self.counts["unreadable_videos"] += 1
            self.problems.append(f"cannot decode {seq.paths[0]}: {exc}")
            return number
        if seen < span + 1:
            self.counts["short_sequences"] += 1
            self.problems.append(f"video {seq.name} has {seen} frame(s), needs {span + 1}")
            return number
        # The last units lack the frames after them (windows: up to two units lack them).
        while seen - span > first:
            task = self._video_unit(seq, number, buffer, base, first, min(per_unit, seen - span - first))
            number += 1
            if task is not None:
                yield task
            first += per_unit
        return number

    def _video_unit(self, seq: Sequence, number: int, buffer: deque, base: int, first: int,
                    count: int) -> UnitTask | None:
        starts = list(range(first, first + count))
        if number in self.done:
            self.skipped_triplets += count
            return None
        return UnitTask(number, seq.name, base, starts, list(buffer), self.params)


def _run_units(tasks: Iterator[UnitTask], workers: int) -> Iterator[UnitResult]:
    """Results of ``process_unit`` in task order, on ``workers`` processes."""
    if workers <= 1:
        for task in tasks:
            yield process_unit(task)
        return
    # "spawn": a forked child of a process that already runs torch/OpenMP threads can hang.
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque[cf.Future] = deque()
        try:
            for task in tasks:
                pending.append(pool.submit(process_unit, task))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


@dataclass
class PrepareSummary:
    """What a ``prepare`` run did; ``counts`` are totals over the whole cache."""

    out: Path
    source: str
    complete: bool
    counts: dict[str, int]
    units_done_before: int  # units found finished from an interrupted earlier run
    problems: list[str]
    histogram_png: Path | None
    histogram: dict[str, list[float]] | None = None
    units_done_now: int = 0  # units finished by this run (0: the cache was already complete)
    version: int = TRIPLET_VERSION  # of the cache's format: 2 = five-frame windows

    @property
    def patches(self) -> int:
        return self.counts.get("patches", 0)


_WHAT = {TRIPLET_VERSION: "triplets", WINDOW_VERSION: "five-frame windows"}


def _open_cache(out: Path, source: str, kind: str, parameters: dict[str, Any], seed: int, size: int,
                version: int) -> CacheIndex:
    """The index to continue: a matching unfinished one, or a fresh one."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    if (out / INDEX_NAME).exists():
        try:
            old = read_index(out)
        except InputError as exc:
            raise OutputError(f"{exc}; choose another --out or delete {out}") from None
        if old.version != version:
            # Shards of both formats in one folder would be unreadable as either.
            flag = "add --triplets" if old.version == TRIPLET_VERSION else "leave out --triplets"
            raise OutputError(
                f"{out} holds a version-{old.version} cache of {_WHAT[old.version]}, this run writes version "
                f"{version} ({_WHAT[version]}); {flag} to continue it, or choose another --out or delete it"
            )
        mine = {"source": source, "kind": kind, "parameters": parameters, "seed": seed, "size": size}
        theirs = {"source": old.source, "kind": old.kind, "parameters": old.parameters, "seed": old.seed, "size": old.size}
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs[k])
            if "parameters" in diff:
                diff.remove("parameters")
                diff += sorted(k for k in set(parameters) | set(old.parameters)
                               if parameters.get(k) != old.parameters.get(k))
            raise OutputError(
                f"{out} holds patches prepared with a different {', '.join(diff)}; "
                "choose another --out or delete it"
            )
        return old
    if out.is_dir() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty and is not a patch cache; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror or exc}") from None
    return CacheIndex(source=source, kind=kind, parameters=parameters, seed=seed, size=size, version=version)


def _totals(index: CacheIndex, extra: dict[str, int]) -> dict[str, int]:
    totals = dict(extra)
    for unit in index.units:
        for k, v in unit.counts.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    totals["patches"] = index.patches
    return totals


def _summed_hist(index: CacheIndex, name: str) -> list[int]:
    out = [0] * HIST_BINS
    for unit in index.units:
        for i, v in enumerate(unit.counts.get(name, [])):
            out[i] += v
    return out


def prepare_frames(
    source: str | Path,
    out: str | Path,
    params: SelectionParams = SelectionParams(),
    workers: int = 1,
    progress: Progress | None = None,
) -> PrepareSummary:
    """Fill the patch cache ``out`` from the frames under ``source``; resume if unfinished.

    Writes five-frame windows (version 2) unless ``params.windows`` is False. Raises
    ``InputError`` for a missing or empty source, ``OutputError`` when ``out`` holds
    something else (another cache's parameters or version, unrelated files). Skippable
    problems (short sequences, unreadable images or videos, mixed frame sizes) are
    counted in the summary. If ``progress`` raises (e.g. ``KeyboardInterrupt``), every
    unit finished so far stays in the cache and the next call continues from there.
    """
    params.check()
    source = Path(source)
    sequences = find_sequences(source)
    out = Path(out)
    # ``windows`` is the index's version, so the parameters read as they did in version 1.
    parameters = {k: v for k, v in asdict(params).items() if k not in ("seed", "windows")}
    version = WINDOW_VERSION if params.windows else TRIPLET_VERSION
    index = _open_cache(out, str(source.resolve()), "frames", parameters, params.seed, params.size, version)
    done = {u.number for u in index.units}
    before = len(done)
    if index.complete:  # nothing left to do: report what is there
        return _summary_of(out, index, before)
    planner = _Planner(sequences, params, done)
    total = planner.total_triplets()
    triplets_done = sum(u.counts.get("triplets", 0) for u in index.units)
    if progress is not None:
        progress(triplets_done, total)
    for result in _run_units(planner.tasks(), workers):
        shard = write_shard(out, result.number, result.patches, result.valid) if len(result.patches) else None
        counts: dict[str, Any] = dict(result.counts)
        counts["flow_tried"] = result.flow_tried
        counts["flow_kept"] = result.flow_kept
        index.units.append(UnitRecord(result.number, result.key, shard, len(result.patches), counts, result.problems))
        index.units.sort(key=lambda u: u.number)
        write_index(out, index)
        triplets_done += result.counts["triplets"]
        if progress is not None:
            progress(triplets_done, total)
    index.counts = _totals(index, planner.counts)
    index.counts["unreadable_images"] = len(
        {p for u in index.units for p in u.problems if p.startswith("unreadable image")}
    )
    index.histogram = {
        "bin_px": [HIST_BIN_PX],
        "tried": [float(v) for v in _summed_hist(index, "flow_tried")],
        "kept": [float(v) for v in _summed_hist(index, "flow_kept")],
    }
    index.problems = planner.problems
    index.complete = True
    write_index(out, index)
    png = out / HISTOGRAM_NAME
    write_histogram_png(png, index.histogram["tried"], index.histogram["kept"], HIST_BIN_PX)
    return _summary_of(out, index, before)


def _summary_of(out: Path, index: CacheIndex, before: int) -> PrepareSummary:
    problems = list(dict.fromkeys(index.problems + [p for u in index.units for p in u.problems]))
    png = out / HISTOGRAM_NAME
    return PrepareSummary(
        out, index.source, index.complete, dict(index.counts), before, problems,
        png if png.exists() else None, index.histogram, len(index.units) - before, index.version,
    )


def write_histogram_png(path: Path, tried: list[float], kept: list[float], bin_px: float) -> None:
    """Bar chart of window mean-flow magnitudes: tried (grey outline) and kept (filled)."""
    import cv2

    W, H, left, bottom, top = 720, 360, 60, 50, 40
    img = np.full((H, W, 3), 255, np.uint8)
    n = len(tried)
    peak = max(1.0, max(tried + kept))
    bw = (W - left - 20) / n
    base = H - bottom
    for i in range(n):
        x0, x1 = int(left + i * bw + 1), int(left + (i + 1) * bw - 1)
        hk = int((H - bottom - top) * kept[i] / peak)
        ht = int((H - bottom - top) * tried[i] / peak)
        if hk:
            cv2.rectangle(img, (x0, base - hk), (x1, base), (200, 120, 40), -1)
        if ht:
            cv2.rectangle(img, (x0, base - ht), (x1, base), (120, 120, 120), 1)
    cv2.line(img, (left, base), (W - 20, base), (0, 0, 0), 1)
    cv2.line(img, (left, base), (left, top), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(0, n + 1, 4):
        x = int(left + i * bw)
        cv2.line(img, (x, base), (x, base + 4), (0, 0, 0), 1)
        label = f"{i * bin_px:g}" + ("+" if i == n - 1 else "")
        cv2.putText(img, label, (x - 8, base + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "mean SimpleFlow magnitude of the window, frame 1 -> 3 (px)", (left, H - 10),
                font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"windows (peak {int(peak)}): outline = non-static tried, filled = kept", (left, 24),
                font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OutputError(f"cannot write {path}")


# --------------------------------------------------------------------------------------
# Synthetic scenes


def prepare_synthetic(
    photos: str | Path,
    out: str | Path,
    count: int,
    seed: int = 0,
    config: Any = None,
    device: str | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    scenes_per_unit: int = 256,
    batch: int = 32,
    windows: bool = True,
) -> PrepareSummary:
    """Render ``count`` synthetic scenes (``synthetic.SceneRenderer``) into the cache ``out``.

    Scene ``i`` is rendered from ``default_rng([seed, i])``, ``scenes_per_unit`` scenes per
    shard; an interrupted run resumes at the first unfinished shard. ``workers`` sets
    torch's CPU threads for the run (rendering is batched tensor work, not processes).
    ``config`` is a ``SceneConfig`` (its ``size`` is the patch size). ``windows``: five
    frames at t = -1, 0, 0.5, 1, 2 per scene (version 2; the neighbours always exist),
    else triplets (version 1); the triplet frames are the same either way.
    """
    import torch

    from sepconv_cli.data.synthetic import PhotoBank, SceneConfig, SceneRenderer

    config = config or SceneConfig()
    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    if scenes_per_unit < 1 or batch < 1:
        raise InputError("scenes_per_unit and batch must be at least 1")
    config.check()
    photos = Path(photos)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    bank = PhotoBank.from_folder(photos, device=device)
    renderer = SceneRenderer(bank, config, device=device)
    out = Path(out)
    parameters = {**renderer.describe(), "count": count, "scenes_per_unit": scenes_per_unit}
    version = WINDOW_VERSION if windows else TRIPLET_VERSION
    index = _open_cache(out, str(photos.resolve()), "synthetic", parameters, seed, config.size, version)
    before = len(index.units)
    if index.complete:
        return _summary_of(out, index, before)
    done = {u.number for u in index.units}
    units = [(n, range(s, min(count, s + scenes_per_unit))) for n, s in enumerate(range(0, count, scenes_per_unit))]
    finished = sum(len(r) for n, r in units if n in done)
    if progress is not None:
        progress(finished, count)
    threads = torch.get_num_threads()
    if workers > 0 and renderer.device.type == "cpu":
        torch.set_num_threads(workers)
    try:
        for number, scenes in units:
            if number in done:
                continue
            patches, valid, hist = _render_unit(renderer, scenes, seed, batch, windows)
            shard = write_shard(out, number, patches, valid)
            counts: dict[str, Any] = {"scenes": len(patches), "motion_hist": hist}
            key = f"synthetic:{scenes.start}-{scenes.stop - 1}"
            index.units.append(UnitRecord(number, key, shard, len(patches), counts))
            index.units.sort(key=lambda u: u.number)
            write_index(out, index)
            finished += len(patches)
            if progress is not None:
                progress(finished, count)
    finally:
        torch.set_num_threads(threads)
    index.counts = {"scenes": index.patches, "patches": index.patches, "photos": len(bank),
                    "unreadable_images": len(bank.skipped)}
    index.histogram = {"bin_px": [HIST_BIN_PX], "motion": [float(v) for v in _summed_hist(index, "motion_hist")]}
    index.problems = [f"unreadable image {p}" for p in bank.skipped]
    index.complete = True
    write_index(out, index)
    return _summary_of(out, index, before)


def _render_unit(renderer: Any, scenes: range, seed: int, batch: int,
                 windows: bool) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """The unit's frames, uint8 (N, 3 or 5, 3, S, S), their neighbour flags (windows
    only) and the histogram of their largest motions."""
    parts, flags, hist = [], [], [0] * HIST_BINS
    for b in range(scenes.start, scenes.stop, batch):
        rendered = renderer.render(range(b, min(scenes.stop, b + batch)), seed, windows=windows)
        parts.append(rendered.to_uint8())
        if windows:
            flags.append(np.where(rendered.valid.numpy(), BOTH, 0).astype(np.uint8))
        for m in rendered.motion:
            hist[hist_bin(float(m))] += 1
    return np.concatenate(parts), np.concatenate(flags) if windows else None, hist
