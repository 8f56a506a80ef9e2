"""Score every method on the same triplets, and write the results.

``run_evaluation`` reads each triplet of a ``Dataset`` once, hands the same two frames
(and, on an any-time benchmark such as ``video-thirds``, the ground truth's time t) to
every method, and scores each 8-bit prediction against the ground truth:

- PSNR = 10·log10(255² / MSE), the MSE over all pixels and the three RGB channels of
  the whole frame (no crop). An exact match (MSE 0) counts as ``PSNR_CAP`` dB so that
  averages stay finite.
- SSIM as Wang et al. 2004 on 0..255 values: 11×11 Gaussian window (σ = 1.5),
  K1 = 0.01, K2 = 0.03 (C1 = (0.01·255)², C2 = (0.03·255)²), per channel, averaged
  over the positions where the window fits inside the frame (a 5-px border is not a
  window centre) and over R, G, B. Equal to scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
  channel_axis=-1)`` within 1e-4 (``metrics.frame_ssim`` computes it in float32; on
  natural frames it agrees to ~1e-8).

A sample's (and the overall) PSNR and SSIM are the means of its frames' scores;
``seconds`` is the time the method itself took on them (not reading or scoring), on warm
calls only: each method first runs once, untimed, on the first triplet it scores, so that
a model's one-off start-up (allocations, a kernel build, the first DIS instance) does not
count as seconds per frame. On an
any-time benchmark the scores are also given per time t (``SampleScore.t``), methods
that predict only midpoints are left out (``Evaluation.left_out`` says why), and the
JSON records and CSV rows carry a ``t``; midpoint benchmarks write exactly what they
always did.

Writers: ``write_json`` (one record per benchmark, sample and method), ``write_csv``
(one row per frame and method) and ``write_report`` (the worst frames of each method
beside the ground truth, and a per-frame PSNR plot, as PNGs drawn with OpenCV).
Nothing here prints: progress goes to callbacks, ``progress(done, total)`` after every
triplet, ``on_step(Step)`` before each method runs on a triplet, and
``on_sample(scores)`` with a sample's ``SampleScore`` per method (per t and method on an
any-time benchmark) as soon as its last triplet is scored.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from sepconv_cli.errors import InputError, OutputError, SepconvError
from sepconv_cli.evaluation.benchmarks import Dataset, Sample, Skip, Triplet
from sepconv_cli.evaluation.method import Method
from sepconv_cli.metrics import frame_psnr, frame_ssim

__all__ = [
    "PSNR_CAP",
    "Evaluation",
    "FrameScore",
    "SampleScore",
    "Step",
    "WorstFrame",
    "run_evaluation",
    "score",
    "split_methods",
    "time_label",
    "write_csv",
    "write_json",
    "write_report",
]

PSNR_CAP = 100.0
SSIM_WINDOW = 11
Progress = Callable[[int, "int | None"], None]


def time_label(t: float) -> str:
    """``t`` as a short fraction for tables: 1/3, 2/3, 1/2."""
    return str(Fraction(t).limit_denominator(1000))


def split_methods(dataset: Dataset, methods: Sequence[Method]) -> tuple[list[Method], list[str]]:
    """The methods that can run on ``dataset``, and a one-line note for each left out.

    On a midpoint benchmark every method runs; on an any-time one a method that predicts
    only midpoints (``any_time`` False: sepconv, dsepconv) is left out, not an error.
    """
    if not dataset.any_time:
        return list(methods), []
    kept, notes = [], []
    times = " and ".join(time_label(t) for t in dataset.times)
    for method in methods:
        if method.any_time:
            kept.append(method)
        else:
            notes.append(f"{method.name} skipped: it predicts only midpoints (t = 1/2), and {dataset.benchmark} "
                         f"asks for t = {times}")
    return kept, notes


def score(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of an ``(H, W, 3)`` uint8 prediction against uint8 ground truth.

    PSNR is capped at ``PSNR_CAP``; SSIM is in [-1, 1].
    """
    if prediction.dtype != np.uint8 or truth.dtype != np.uint8:
        raise ValueError(f"score 8-bit frames, got {prediction.dtype} and {truth.dtype}")
    return min(frame_psnr(prediction, truth), PSNR_CAP), frame_ssim(prediction, truth, window=SSIM_WINDOW)


@dataclass(frozen=True)
class FrameScore:
    benchmark: str
    sample: str
    frame: str
    method: str
    psnr: float
    ssim: float
    seconds: float
    t: float = 0.5


@dataclass(frozen=True)
class SampleScore:
    """Mean scores of one method over one sample's frames (``sample`` None: all frames),
    at time ``t`` only (``t`` None: at every time)."""

    benchmark: str
    sample: str | None
    method: str
    psnr: float
    ssim: float
    frames: int
    seconds: float
    t: float | None = None

    def record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "benchmark": self.benchmark, "sample": self.sample, "method": self.method,
            "psnr": self.psnr, "ssim": self.ssim, "frames": self.frames, "seconds": self.seconds,
        }
        if self.t is not None:
            record["t"] = self.t
        return record


@dataclass(frozen=True)
class Step:
    """Where a run is: what ``on_step`` receives just before ``method`` runs on a triplet.

    ``sample`` is the clip or sequence being scored, the ``number``-th of ``samples``;
    ``done`` triplets of it have been scored by every method, of ``total`` expected (the
    sample's count, an estimate for videos, cut to what ``limit`` leaves; None when
    unknown). ``overall_done``/``overall_total`` count triplets over the whole run.
    """

    sample: str
    number: int
    samples: int
    method: str
    done: int
    total: int | None
    overall_done: int
    overall_total: int | None


@dataclass(frozen=True)
class WorstFrame:
    method: str
    sample: str
    frame: str
    psnr: float
    ssim: float
    prediction: np.ndarray
    truth: np.ndarray
    t: float = 0.5


@dataclass
class Evaluation:
    """Everything one run measured. ``frames`` in the order scored (triplet by triplet,
    methods in their order); ``worst[method]`` the lowest-PSNR frames, worst first;
    ``times`` the benchmark's ground-truth times (``(0.5,)``: a midpoint protocol);
    ``left_out`` a note for each method that could not take part."""

    benchmark: str
    methods: list[str]
    frames: list[FrameScore] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    worst: dict[str, list[WorstFrame]] = field(default_factory=dict)
    times: tuple[float, ...] = (0.5,)
    left_out: list[str] = field(default_factory=list)

    @property
    def any_time(self) -> bool:
        return any(t != 0.5 for t in self.times)

    @property
    def triplets(self) -> int:
        return len(self.frames) // max(1, len(self.methods))

    @property
    def sample_names(self) -> list[str]:
        return list(dict.fromkeys(f.sample for f in self.frames))

    def _summary(self, sample: str | None, method: str, frames: Sequence[FrameScore] | None = None,
                 t: float | None = None) -> SampleScore:
        """Mean scores of ``method`` on ``sample`` (all samples if None) at time ``t`` (all
        if None), from ``frames`` (default: every frame scored) so that a finished sample
        need not scan them all."""
        rows = [f for f in (self.frames if frames is None else frames)
                if f.method == method and (sample is None or f.sample == sample) and (t is None or f.t == t)]
        return SampleScore(
            self.benchmark, sample, method,
            psnr=float(np.mean([r.psnr for r in rows])) if rows else math.nan,
            ssim=float(np.mean([r.ssim for r in rows])) if rows else math.nan,
            frames=len(rows), seconds=float(sum(r.seconds for r in rows)), t=t,
        )

    def _sample_scores(self, sample: str | None, frames: Sequence[FrameScore] | None = None) -> list[SampleScore]:
        """Per method on a midpoint benchmark; per t (in order), then method, on an any-time one."""
        if not self.any_time:
            return [self._summary(sample, method, frames) for method in self.methods]
        return [self._summary(sample, method, frames, t) for t in self.times for method in self.methods]

    def per_sample(self) -> list[SampleScore]:
        """One ``SampleScore`` per (sample, method), samples in order; per (sample, t,
        method) on an any-time benchmark."""
        return [s for sample in self.sample_names for s in self._sample_scores(sample)]

    def overall(self) -> list[SampleScore]:
        """One ``SampleScore`` per method over every frame scored (``sample`` None), at
        every t."""
        return [self._summary(None, method) for method in self.methods]

    def per_time(self) -> list[SampleScore]:
        """One ``SampleScore`` per (t, method) over every sample, times in order."""
        return [self._summary(None, method, t=t) for t in self.times for method in self.methods]


def _score(method: Method, item: Triplet, benchmark: str, warm: set[str]) -> tuple[np.ndarray, FrameScore]:
    """One method's prediction of one triplet and its score; the first call of a method
    (``warm``) is made once more untimed, so set-up costs stay out of its time per frame."""
    # Two arguments at the midpoint, so that predictors written before t existed still run there.
    args = (item.first, item.second) if item.t == 0.5 else (item.first, item.second, item.t)
    extra = {"before": item.before, "after": item.after} if getattr(method, "takes_neighbours", False) else {}
    if method.name not in warm:
        method(*args, **extra)  # the warm-up call, not timed
        warm.add(method.name)
    started = time.perf_counter()
    prediction = method(*args, **extra)
    seconds = time.perf_counter() - started
    value, similarity = score(prediction, item.truth)
    return prediction, FrameScore(benchmark, item.sample, item.frame, method.name, value, similarity, seconds, item.t)


def _keep_worst(heap: list[tuple[float, int, WorstFrame]], size: int, counter: int, frame: FrameScore,
                prediction: np.ndarray, truth: np.ndarray) -> None:
    """Keep the ``size`` worst frames of a method in ``heap`` (ties: the earlier frame stays)."""
    entry = (-frame.psnr, counter, WorstFrame(frame.method, frame.sample, frame.frame, frame.psnr, frame.ssim, prediction,
                                             truth, frame.t))
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry[0] > heap[0][0]:
        heapq.heapreplace(heap, entry)


def _begin_sample(methods: Sequence[Method], sample: Sample, warm: set[str]) -> None:
    for method in methods:
        begin = getattr(method, "begin_sample", None)
        if begin is not None:  # e.g. adapting to the sample's input frames (evaluation.adapted)
            begin(sample)
            warm.discard(method.name)  # a new network: its first call pays the warm-up again


def _finished(result: Evaluation, heaps: dict[str, list[tuple[float, int, WorstFrame]]]) -> Evaluation:
    if not result.frames:
        reasons = f": {result.skipped[0].sample}: {result.skipped[0].reason}" if result.skipped else ""
        raise InputError(f"no {result.benchmark} triplet could be scored ({len(result.skipped)} skipped){reasons}")
    result.worst = {name: [e[2] for e in sorted(heap, key=lambda e: (-e[0], e[1]))] for name, heap in heaps.items()}
    return result


def run_evaluation(
    dataset: Dataset,
    methods: Sequence[Method],
    *,
    limit: int | None = None,
    keep_worst: int = 0,
    progress: Progress | None = None,
    on_step: Callable[[Step], None] | None = None,
    on_sample: Callable[[list[SampleScore]], None] | None = None,
) -> Evaluation:
    """Score ``methods`` on the first ``limit`` triplets of ``dataset`` (all if None).

    On an any-time benchmark, methods that predict only midpoints are left out with a
    note in ``Evaluation.left_out`` (``split_methods``); a ``SepconvError`` when none is left.
    ``progress(done, total)`` is called before the first triplet and after each one;
    ``on_step`` before each method runs on a triplet; ``on_sample`` with one
    ``SampleScore`` per method (in their order; per t, then method, on an any-time
    benchmark) when a sample with at least one scored triplet is finished (or cut short
    by ``limit``).
    Raises ``InputError`` when not one triplet could be read.
    """
    methods, left_out = split_methods(dataset, methods)
    if not methods:
        raise SepconvError(f"no method left to score on {dataset.benchmark}: {'; '.join(left_out)}")
    result = Evaluation(dataset.benchmark, [m.name for m in methods], times=dataset.times, left_out=left_out)
    total = dataset.triplets
    if limit is not None:
        total = limit if total is None else min(total, limit)
    heaps: dict[str, list[tuple[float, int, WorstFrame]]] = {m.name: [] for m in methods}
    counter = 0
    done = 0
    warm: set[str] = set()
    if progress:
        progress(0, total)
    for number, sample in enumerate(dataset.samples, 1):
        if limit is not None and done >= limit:
            break
        expected = sample.triplets
        if limit is not None and expected is not None:
            expected = min(expected, limit - done)
        first_frame = len(result.frames)
        sample_done = 0
        _begin_sample(methods, sample, warm)
        items = sample.read()
        try:
            for item in items:
                if isinstance(item, Skip):
                    result.skipped.append(item)
                    continue
                if min(item.truth.shape[:2]) < SSIM_WINDOW:
                    result.skipped.append(Skip(item.sample, f"{item.frame}: smaller than the {SSIM_WINDOW}-px SSIM window"))
                    continue
                for method in methods:
                    if on_step:
                        on_step(Step(sample.name, number, len(dataset.samples), method.name, sample_done, expected,
                                     done, total))
                    prediction, frame = _score(method, item, dataset.benchmark, warm)
                    result.frames.append(frame)
                    if keep_worst:
                        counter += 1
                        _keep_worst(heaps[method.name], keep_worst, counter, frame, prediction, item.truth)
                done += 1
                sample_done += 1
                if progress:
                    progress(done, total)
                if limit is not None and done >= limit:
                    break
        finally:
            close = getattr(items, "close", None)
            if close:
                close()
        if on_sample and sample_done:
            scored = result.frames[first_frame:]
            on_sample(result._sample_scores(scored[0].sample, scored))
    return _finished(result, heaps)


def _open_for_writing(path: Path, newline: str | None = None):  # noqa: ANN202
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8", newline=newline)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_json(result: Evaluation, path: Path) -> None:
    """A JSON list of ``{"benchmark","sample","method","psnr","ssim","frames","seconds"}``,
    one per (sample, method); on an any-time benchmark one per (sample, t, method), each
    with its ``"t"`` too. The overall score is the frame-weighted mean of these."""
    with _open_for_writing(Path(path)) as handle:
        json.dump([s.record() for s in result.per_sample()], handle, indent=1)
        handle.write("\n")


def write_csv(result: Evaluation, path: Path) -> None:
    """One row per (frame, method): benchmark, sample, frame, method, psnr, ssim, seconds,
    and on an any-time benchmark t (e.g. 0.333333)."""
    timed = result.any_time
    with _open_for_writing(Path(path), newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benchmark", "sample", "frame", "method", "psnr", "ssim", "seconds"] + (["t"] if timed else []))
        for f in result.frames:
            row = [f.benchmark, f.sample, f.frame, f.method, f"{f.psnr:.4f}", f"{f.ssim:.6f}", f"{f.seconds:.6f}"]
            writer.writerow(row + ([f"{f.t:.6f}"] if timed else []))


# --- report ------------------------------------------------------------------------------------

# BGR colours for up to 10 methods (OpenCV draws in BGR); then they repeat.
PALETTE = [
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "x"


def _write_png(path: Path, bgr: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", bgr)
    try:
        if not ok:
            raise OSError("PNG encoding failed")
        path.write_bytes(data.tobytes())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}") from None


def side_by_side(worst: WorstFrame) -> np.ndarray:
    """BGR image: prediction | ground truth | |error| ×4 (max over RGB), under a caption.

    Frames narrower than 320 px are enlarged (nearest neighbour) so they can be seen.
    """
    import cv2

    error = np.abs(worst.prediction.astype(np.int16) - worst.truth.astype(np.int16)).max(axis=2)
    heat = cv2.applyColorMap(np.clip(error * 4, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    tiles = [worst.prediction[:, :, ::-1], worst.truth[:, :, ::-1], heat]
    zoom = max(1, math.ceil(320 / worst.truth.shape[1]))
    if zoom > 1:
        tiles = [cv2.resize(t, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) for t in tiles]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = np.hstack([tiles[0], gap, tiles[1], gap, tiles[2]])
    at = "" if worst.t == 0.5 else f" at t = {time_label(worst.t)}"
    lines = [
        f"{worst.method}: {worst.sample}, frame {worst.frame}{at}",
        f"PSNR {worst.psnr:.2f} dB, SSIM {worst.ssim:.4f}    prediction | ground truth | |error| x4",
    ]
    caption = np.full((22 * len(lines) + 6, row.shape[1], 3), 255, np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(caption, text, (6, 20 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([caption, row])


def psnr_plot(result: Evaluation, width: int = 1000, height: int = 420) -> np.ndarray:
    """BGR chart of each method's PSNR per frame, frames in the order scored."""
    import cv2

    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 170, 20, 40
    series = {m: [f.psnr for f in result.frames if f.method == m] for m in result.methods}
    values = [v for vs in series.values() for v in vs]
    low, high = math.floor(min(values)) - 1, math.ceil(max(values)) + 1
    count = max(len(vs) for vs in series.values())
    font = cv2.FONT_HERSHEY_SIMPLEX
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(i: int) -> int:
        return left + (plot_w // 2 if count == 1 else round(i * plot_w / (count - 1)))

    def y_of(v: float) -> int:
        return top + round((high - v) * plot_h / (high - low))

    step = max(1, math.ceil((high - low) / 8))
    for v in range(int(low), int(high) + 1):
        if v % step:
            continue
        y = y_of(v)
        cv2.line(canvas, (left, y), (left + plot_w, y), (225, 225, 225), 1)
        cv2.putText(canvas, str(v), (left - 34, y + 4), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    for i in sorted({0, count - 1, *range(0, count, max(1, math.ceil(count / 10)))}):
        cv2.putText(canvas, str(i + 1), (x_of(i) - 6, top + plot_h + 16), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(canvas, "triplet, in the order scored", (left + plot_w // 2 - 100, height - 6), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "dB", (8, top + 12), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (method, vs) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = np.array([[x_of(i), y_of(v)] for i, v in enumerate(vs)], np.int32)
        if len(points) > 1:
            cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, colour, 1, cv2.LINE_AA)
        if len(points) <= 60:
            for point in points:
                cv2.circle(canvas, (int(point[0]), int(point[1])), 3, colour, -1, cv2.LINE_AA)
        y = top + 14 + 20 * k
        cv2.line(canvas, (width - right + 12, y - 4), (width - right + 32, y - 4), colour, 2)
        cv2.putText(canvas, method[:18], (width - right + 38, y), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def write_report(result: Evaluation, directory: Path) -> list[Path]:
    """Write ``psnr.png`` and ``<method>/worst-<rank>-<sample>-<frame>.png`` under ``directory``.

    Returns the files written.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report folder {directory}: {exc.strerror or exc}") from None
    written = []
    plot = directory / "psnr.png"
    _write_png(plot, psnr_plot(result))
    written.append(plot)
    for method, frames in result.worst.items():
        folder = directory / _safe(method)
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
        for rank, worst in enumerate(frames, 1):
            path = folder / f"worst-{rank}-{_safe(worst.sample)}-{_safe(worst.frame)}.png"
            _write_png(path, side_by_side(worst))
            written.append(path)
    return written
