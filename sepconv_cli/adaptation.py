"""Adapting a model to one video before interpolating it (``interpolate --adapt``).

A trained interpolator has seen other footage; the video at hand is the best example of
itself. ``adapt`` fine-tunes the weights on triplets ``(i, i+1, i+2)`` of the frames it is
*given*, with the project's own training loop (``training.train``), then returns the
better of the adapted and the original weights on triplets it held out:

- **Triplets**: up to ``AdaptOptions.triplets`` spread evenly over the frames (a shot
  cut inside one drops it), cut into patches, moving windows preferred (``_patches``). Inside a triplet the outer
  frames are two steps apart, twice the motion the model meets between neighbours at run
  time, so each triplet is also used downscaled ×2 (the same motion in pixels as at run
  time, on half-size content).
- **Against over-fitting**: with ``scenes``, half of every batch is procedural scenes
  (``data.synthetic``) textured with frames of the video itself, with known ground truth at
  random t. Off by default: in budgets of minutes the model sees each patch a few times
  only, the held-out check below guards the rest, and every step spent on scenes is one
  not spent on the video.
- **Never worse**: every ``held_out_every``-th chosen triplet is kept out of training; the
  original weights are scored on them before the first step (``validate_init``) and the
  checkpoint that scores best there is exported, the original weights if nothing beats
  them. ``AdaptResult.adapted`` says which.

Nothing here reads a frame it is not given: ``eval --adapt`` hands it the frames a method
may see (the even frames of the ``video`` benchmark), never the frames it is scored on.

``adapted_weights`` adds a cache keyed by the input's bytes, the base weights' bytes and
the options, so a second run on the same input (other output settings) reuses the work.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sepconv_cli.data.cache import CacheIndex, UnitRecord, write_index, write_shard
from sepconv_cli.data.prepare import _to_uint8
from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.scenes import CutDetector
from sepconv_cli.training import TrainConfig, TrainingError, TrainProgress
from sepconv_cli.training import train as run_training

FORMAT_VERSION = 1  # of the cached adaptations: bump when a change makes old ones stale


@dataclass(frozen=True)
class AdaptOptions:
    """How to adapt. ``budget``: seconds for everything (triplets and training);
    ``steps``: stop after this many optimizer steps instead (reproducible, for tests).
    ``triplets``: most triplets drawn from the input; ``held_out_every``: every N-th of them
    is held out (at least one); ``patch``/``patches``: training patch side (px) and most
    patches per triplet; ``val_patch``: side of the held-out patches (smaller frames: their
    short side). ``lr``, ``batch_size``, ``crop``: as in ``sepconv train``.
    """

    budget: float = 300.0
    steps: int | None = None
    lr: float = 3e-4
    batch_size: int = 8
    crop: int = 128
    patch: int = 160
    patches: int = 6
    triplets: int = 120
    held_out_every: int = 6
    val_patch: int = 256
    scenes: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise InputError(f"the adaptation budget must be positive, not {self.budget:g} s")
        if self.crop > self.patch:
            raise InputError(f"crop {self.crop} is larger than the patches ({self.patch} px)")


@dataclass
class AdaptProgress:
    """What the progress callback receives: ``phase`` "triplets" (``done`` of ``total``
    frames read, ``total`` None when unknown) or "training" (``done`` seconds of ``total``,
    ``step``, ``gain`` the best held-out PSNR so far minus the original weights', dB)."""

    phase: str
    done: float
    total: float | None
    step: int = 0
    gain: float | None = None


@dataclass
class AdaptResult:
    """``weights``: the file to interpolate with, the adapted weights or, when they did
    not beat the original ones on the held-out triplets, a copy of those (``adapted``
    False). PSNRs are on the held-out triplets (dB)."""

    weights: Path
    adapted: bool
    base_psnr: float | None
    best_psnr: float | None
    steps: int
    seconds: float
    train_triplets: int
    held_out_triplets: int
    reused: bool = False

    @property
    def gain(self) -> float:
        if self.base_psnr is None or self.best_psnr is None:
            return 0.0
        return self.best_psnr - self.base_psnr

    def summary(self) -> str:
        """One line for the run's report."""
        if self.reused:
            how = "reused the adaptation kept from an earlier run"
        else:
            how = f"{self.steps} steps in {self.seconds:.0f} s on {self.train_triplets} triplets"
        if self.adapted:
            return f"adapted ({how}): {self.gain:+.2f} dB on {self.held_out_triplets} held-out triplets"
        return (f"kept the original weights ({how}): adapting gained nothing on {self.held_out_triplets} "
                "held-out triplets")


Progress = Callable[[AdaptProgress], None]
Note = Callable[[str], None]


def _half(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def spread_triplets(frames: Iterable[np.ndarray], count: int, total: int | None = None,
                    progress: Callable[[int], None] | None = None) -> list[tuple[int, tuple[np.ndarray, ...]]]:
    """At most ``count`` triplets of consecutive frames, spread over the whole of ``frames``.

    Returns ``(index of the first frame, (f0, f1, f2))`` in order; consecutive triplets
    share no frame. With ``total`` (the number of frames, if known) the starts are evenly
    spaced; otherwise every third frame starts one and, whenever twice ``count`` are held,
    every other one is dropped (the spacing doubles), so memory stays bounded.
    """
    step = max(3, (total - 2) // count) if total else 3
    kept: list[tuple[int, tuple[np.ndarray, ...]]] = []
    window: list[np.ndarray] = []
    start = 0
    for index, frame in enumerate(frames):
        if progress is not None:
            progress(index + 1)
        if index < start:
            continue
        window.append(_to_uint8(frame))
        if len(window) == 3:
            kept.append((start, tuple(window)))
            window = []
            if len(kept) >= 2 * count:
                kept = kept[::2]
                step *= 2
            start += step
    if len(kept) > count:
        kept = [kept[round(k * (len(kept) - 1) / (count - 1))] for k in range(count)] if count > 1 else kept[:1]
    return kept


class _CacheWriter:
    """A patch cache written in one go (no resume): shards of triplets, then the index."""

    def __init__(self, root: Path, size: int, seed: int) -> None:
        self.root = root
        self.index = CacheIndex(source="adaptation", kind="frames", parameters={"size": size}, seed=seed, size=size)

    def add(self, triplets: np.ndarray, key: str) -> None:
        if len(triplets):
            number = len(self.index.units)
            shard = write_shard(self.root, number, triplets)
            self.index.units.append(UnitRecord(number, key, shard, len(triplets)))

    def close(self) -> int:
        self.index.complete = True
        self.root.mkdir(parents=True, exist_ok=True)
        write_index(self.root, self.index)
        return self.index.patches


def _patches(frames: tuple[np.ndarray, ...], size: int, patches: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``patches`` windows of ``size`` px of one triplet, ``(N, 3, 3, S, S)`` uint8.

    Like ``sepconv prepare`` it prefers moving content, but by the outer frames' mean
    difference ``d`` (8-bit levels) rather than by optical flow, which would cost more
    than the training step it feeds: a window is kept with probability ``1 - exp(-d / 3)``,
    so still windows (d < 1) are rare but present, as still regions are in the video.
    """
    f0, f1, f2 = frames
    h, w = f0.shape[:2]
    if h < size or w < size:
        return np.zeros((0, 3, 3, size, size), np.uint8)
    import cv2

    diff = cv2.integral(np.abs(f0.astype(np.int16) - f2.astype(np.int16)).sum(axis=2).astype(np.float64))
    kept = []
    for _ in range(4 * patches):
        if len(kept) >= patches:
            break
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        d = (diff[y + size, x + size] - diff[y, x + size] - diff[y + size, x] + diff[y, x]) / (3 * size * size)
        if rng.random() < 1 - math.exp(-d / 3):
            kept.append(np.stack([f[y : y + size, x : x + size] for f in frames]).transpose(0, 3, 1, 2))
    return np.stack(kept) if kept else np.zeros((0, 3, 3, size, size), np.uint8)


def write_triplet_caches(triplets: list[tuple[int, tuple[np.ndarray, ...]]], work: Path,
                         options: AdaptOptions) -> tuple[Path, Path, int, int]:
    """The training and held-out patch caches under ``work``; returns their paths and the
    numbers of triplets that gave patches to each."""
    train_cache, val_cache = work / "train", work / "held_out"
    short = min(triplets[0][1][0].shape[:2])
    val_side = min(options.val_patch, short) // 16 * 16
    if short < options.patch or val_side < 32:
        raise InputError(f"frames of {short} px are too small to adapt to (at least {options.patch} px on a side)")
    train = _CacheWriter(train_cache, options.patch, options.seed)
    held = _CacheWriter(val_cache, val_side, options.seed)
    detect_cut = CutDetector()
    rng = np.random.default_rng(options.seed)
    every = max(2, options.held_out_every)
    counts = [0, 0]
    usable = [(i, t) for i, t in triplets if not (detect_cut(t[0], t[1]) or detect_cut(t[1], t[2]))]
    if len(usable) < 2:
        raise InputError("the input has too few frames (or too many shot cuts) to adapt to: "
                         "at least two triplets of consecutive frames are needed")
    for number, (first, frames) in enumerate(usable):
        key = f"frames:{first}-{first + 2}"
        # Held out: spread over the clip, and at least one.
        if number % every == every // 2 or (number == len(usable) - 1 and counts[1] == 0):
            found = _patches(frames, val_side, 1, rng)
            if not len(found):  # a still triplet still tells whether the model keeps still things still
                y, x = (frames[0].shape[0] - val_side) // 2, (frames[0].shape[1] - val_side) // 2
                found = np.stack([f[y : y + val_side, x : x + val_side] for f in frames]).transpose(0, 3, 1, 2)[None]
            held.add(np.ascontiguousarray(found), key)
            counts[1] += 1
            continue
        found = _patches(frames, options.patch, options.patches, rng)
        half = tuple(_half(f) for f in frames)
        if min(half[0].shape[:2]) >= options.patch:
            found = np.concatenate([found, _patches(half, options.patch, options.patches, rng)])
        train.add(found, key)
        counts[0] += 1
    if not train.index.patches or not held.index.patches:
        raise InputError("the input does not move enough to adapt to (no moving patches found)")
    train.close()
    held.close()
    return train_cache, val_cache, counts[0], counts[1]


def _write_textures(triplets: list[tuple[int, tuple[np.ndarray, ...]]], folder: Path, count: int = 16) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, len(triplets) // count)
    for k, (_, frames) in enumerate(triplets[::step][:count]):
        cv2.imwrite(str(folder / f"{k:03d}.png"), cv2.cvtColor(frames[1], cv2.COLOR_RGB2BGR))
    return folder


def adapt(frames: Iterable[np.ndarray], base: Path, work: Path, options: AdaptOptions = AdaptOptions(), *,
          total: int | None = None, model: str = "flowsep", device: str = "auto", note: Note | None = None,
          progress: Progress | None = None) -> AdaptResult:
    """Fine-tune the weights file ``base`` on ``frames`` (``(H, W, 3)`` uint8 or uint16 RGB, in
    order; ``total`` their number if known) on ``device``, working in the folder ``work``.

    Returns an ``AdaptResult`` whose ``weights`` lie in ``work``. Raises ``InputError`` when
    the frames cannot be adapted to (too few, too small, nothing moves) and
    ``KeyboardInterrupt`` when Ctrl-C stopped the training.
    """
    note = note or (lambda text: None)
    report = progress or (lambda p: None)
    started = time.perf_counter()
    triplets = spread_triplets(frames, options.triplets, total,
                               progress=lambda n: report(AdaptProgress("triplets", n, total)))
    if len(triplets) < 2:
        raise InputError("the input has too few frames to adapt to (at least six are needed)")
    train_cache, val_cache, n_train, n_held = write_triplet_caches(triplets, work, options)
    textures = _write_textures(triplets, work / "textures") if options.scenes else None
    del triplets
    remaining = options.budget - (time.perf_counter() - started)
    if options.steps is None and remaining < 10:
        raise InputError(f"an adaptation budget of {options.budget:g} s leaves no time to train after "
                         "reading the input; give more (e.g. --adapt 5m)")
    config = TrainConfig(
        model=model, init=str(base), validate_init=True, data=str(train_cache), val_data=str(val_cache),
        synthetic=str(textures) if textures else None, scene_size=options.patch, val_scenes=0,
        scenes_per_epoch=max(64, 4 * options.batch_size), max_motion=24.0,
        batch_size=options.batch_size, crop=options.crop, lr=options.lr, epochs=None,
        max_steps=options.steps, time_budget=None if options.steps else remaining,
        val_every=100 if options.steps is None else max(1, options.steps // 4), val_fraction=0.0,
        samples=0, checkpoint_every=0, log_every=50, seed=options.seed, workers=1 if textures else 0,
        device=device,
    )
    training_started = time.perf_counter()
    budget = config.time_budget

    def on_step(p: TrainProgress) -> None:
        gain = None if p.val_psnr_start is None or p.val_psnr_best is None else p.val_psnr_best - p.val_psnr_start
        elapsed = time.perf_counter() - training_started
        if budget is not None:
            report(AdaptProgress("training", min(elapsed, budget), budget, p.step, gain))
        else:
            report(AdaptProgress("training", p.step, p.total_steps, p.step, gain))

    try:
        result = run_training(config, work / "run", args=["adapt"], note=lambda text: None, progress=on_step)
    except TrainingError:  # diverged (a NaN loss): what it learned is worthless, the original is not
        result = None
    if result is not None and result.reason == "interrupted":
        raise KeyboardInterrupt
    adapted = result is not None and result.best_step not in (None, 0)
    if adapted:
        chosen_best = result.run_dir / "best.pt"
        weights = chosen_best if chosen_best.exists() else result.weights
    else:
        weights = work / "original.pt"
        shutil.copyfile(base, weights)
    base_psnr = result.start_psnr if result is not None else None
    outcome = AdaptResult(weights, adapted, base_psnr, result.best_psnr if adapted else base_psnr,
                          result.step if result is not None else 0, time.perf_counter() - started, n_train, n_held)
    note(outcome.summary())
    return outcome


# --------------------------------------------------------------------------------------
# Kept adaptations


def cache_dir() -> Path:
    """Where kept adaptations live: ``$SEPCONV_ADAPT_CACHE``, else ``$XDG_CACHE_HOME/sepconv/adapted``
    (``~/.cache/sepconv/adapted``)."""
    env = os.environ.get("SEPCONV_ADAPT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sepconv" / "adapted"


def _hash_files(paths: Iterable[Path], digest: hashlib._Hash) -> None:
    for path in paths:
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        digest.update(b"\0" + path.name.encode() + b"\0")


def adaptation_key(inputs: Iterable[Path], base: Path, options: AdaptOptions, extra: dict | None = None) -> str:
    """A hash of the input's bytes (every file of a frame folder), the base weights' bytes,
    the options and ``extra`` (e.g. the span of the input used)."""
    digest = hashlib.sha256(f"sepconv-adaptation-{FORMAT_VERSION}".encode())
    _hash_files(inputs, digest)
    _hash_files([base], digest)
    digest.update(json.dumps({**asdict(options), **(extra or {})}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def _load_kept(folder: Path, key: str) -> AdaptResult | None:
    record, weights = folder / f"{key}.json", folder / f"{key}.pt"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not weights.is_file() or data.get("version") != FORMAT_VERSION:
        return None
    fields = {k: data[k] for k in ("adapted", "base_psnr", "best_psnr", "steps", "seconds",
                                   "train_triplets", "held_out_triplets")}
    return AdaptResult(weights, reused=True, **fields)


def _keep(folder: Path, key: str, result: AdaptResult) -> Path:
    """Copy the result's weights into the cache (atomically: a half-written file never has the final name)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{key}.pt"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{key}.", suffix=".partial", delete=False) as tmp:
            with open(result.weights, "rb") as src:
                shutil.copyfileobj(src, tmp)
        os.replace(tmp.name, target)
        record = {"version": FORMAT_VERSION, **{k: v for k, v in asdict(result).items() if k not in ("weights", "reused")}}
        (folder / f".{key}.json.partial").write_text(json.dumps(record, indent=1))
        os.replace(folder / f".{key}.json.partial", folder / f"{key}.json")
    except OSError as exc:
        raise OutputError(f"cannot keep the adapted weights in {folder}: {exc.strerror or exc}") from None
    return target


def adapted_weights(frames: Callable[[], Iterator[np.ndarray]], inputs: list[Path], base: Path,
                    options: AdaptOptions = AdaptOptions(), *, total: int | None = None, model: str = "flowsep",
                    extra_key: dict | None = None, keep_in: Path | None = None, device: str = "auto",
                    note: Note | None = None, progress: Progress | None = None) -> AdaptResult:
    """``adapt`` with a cache: the kept result for the same input files (``inputs``, whose
    decoded frames ``frames()`` yields), base weights and options, else a new adaptation
    that is then kept in ``keep_in`` (default ``cache_dir()``). The returned weights lie in
    that folder. Ctrl-C leaves nothing behind but earlier kept results."""
    folder = keep_in or cache_dir()
    key = adaptation_key(inputs, base, options, extra_key)
    kept = _load_kept(folder, key)
    if kept is not None:
        return kept
    with tempfile.TemporaryDirectory(prefix="sepconv-adapt-") as work:
        result = adapt(frames(), base, Path(work), options, total=total, model=model, device=device, note=note,
                       progress=progress)
        result.weights = _keep(folder, key, result)
    return result


def parse_duration(text: str) -> float:
    """``300``, ``90s``, ``5m``, ``1m30s``, ``1h``, ``4:30`` → seconds (positive)."""
    value = text.strip().lower()
    seconds: float | None = None
    try:
        if ":" in value:
            parts = [float(p) for p in value.split(":")]
            if len(parts) <= 3 and all(p >= 0 for p in parts):
                seconds = sum(p * 60 ** k for k, p in enumerate(reversed(parts)))
        else:
            match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", value)
            if match and value:
                h, m, s = (float(g) if g else 0.0 for g in match.groups())
                seconds = h * 3600 + m * 60 + s
    except ValueError:
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a duration; give seconds (300), minutes (5m), 1m30s or MM:SS")
    return seconds
