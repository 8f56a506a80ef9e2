"""Torch datasets for training: the patch cache, or procedural scenes rendered on the fly.

An item is a ``(3, 3, crop, crop)`` uint8 tensor: frames t = 0, 0.5, 1 (RGB, rows,
columns); with ``timed=True`` a pair ``(triplet, t)``, t the middle frame's time. With
``windows=True`` an item is ``(frames, t, valid)``: ``frames`` a ``(5, 3, crop, crop)``
uint8 tensor [before, frame0, middle, frame1, after] (the neighbours one input interval
before frame0 and after frame1, for models that use the motion around the pair), ``t``
a float32 scalar tensor (the middle frame's time), ``valid`` a float32 scalar tensor,
1.0 when both neighbours are real frames and 0.0 when they are stand-in copies of frame0
and frame1 (a version-1 cache, the end of a sequence, a shot cut). Items stay uint8
until they reach the device (a quarter of the bytes to copy); ``to_frames`` and
``to_window_frames`` turn a batch into the network's float inputs and target.

Augmentation (the KTH replication's, after SepConv): a random ``crop`` × ``crop`` window
of the (150 × 150) patch, then one of {horizontal flip, vertical flip, 90° rotation (+ or
−, equally likely), identity} with probability 1/4 each, then a temporal swap (frames 0
and 1 exchanged, the middle one stays) with probability 1/2. All frames of an item share
the crop and the transform; the swap reverses them all (before and after exchanged too)
and maps t to 1 - t. The random stream is the same with and without windows, so a
window's frames 1..3 are the triplet item of the same index, epoch and seed.

Every random choice for item ``i`` in epoch ``e`` comes from
``numpy.random.default_rng([seed, e, i])``: an item does not depend on the worker that
reads it nor on what was read before, so a resumed run sees exactly the data the
uninterrupted run would have seen, and every process of a distributed run agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sepconv_cli.data.cache import PatchCache
from sepconv_cli.errors import InputError

TRANSFORMS = ("hflip", "vflip", "rotate", "identity")


def augment(triplet: np.ndarray, rng: np.random.Generator, crop: int) -> np.ndarray:
    """Random crop, one flip/rotation/identity, temporal swap with p = 1/2.

    ``triplet``: (F, 3, S, S) array (any dtype; F = 3 frames, or 5 for a window); returns
    a contiguous (F, 3, crop, crop) copy.
    """
    return augment_timed(triplet, rng, crop)[0]


def augment_timed(triplet: np.ndarray, rng: np.random.Generator, crop: int) -> tuple[np.ndarray, bool]:
    """``augment``, also saying whether the frames were swapped in time (a middle frame
    at time t is then at 1 - t)."""
    size = triplet.shape[-1]
    y, x = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
    out = triplet[..., y : y + crop, x : x + crop]
    transform = TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
    turn = 1 if rng.random() < 0.5 else -1  # drawn always, so the stream does not depend on the choice
    if transform == "hflip":
        out = out[..., ::-1]
    elif transform == "vflip":
        out = out[..., ::-1, :]
    elif transform == "rotate":
        out = np.rot90(out, k=turn, axes=(-2, -1))
    swapped = rng.random() < 0.5
    if swapped:
        out = out[::-1]
    return np.ascontiguousarray(out), swapped


def centre_crop(triplet: np.ndarray, crop: int) -> np.ndarray:
    size = triplet.shape[-1]
    start = (size - crop) // 2
    return np.ascontiguousarray(triplet[..., start : start + crop, start : start + crop])


def to_frames(batch: torch.Tensor, device: torch.device | str | None = None,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, 3, S, S) uint8 → frame1, middle, frame2, each (B, 3, S, S) float32 in [0, 1]."""
    return _float_frames(batch, 3, device, channels_last)  # type: ignore[return-value]


def to_window_frames(batch: torch.Tensor, device: torch.device | str | None = None, channels_last: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 5, 3, S, S) uint8 windows → before, frame0, middle, frame1, after, each
    (B, 3, S, S) float32 in [0, 1]."""
    return _float_frames(batch, 5, device, channels_last)  # type: ignore[return-value]


def _float_frames(batch: torch.Tensor, count: int, device: torch.device | str | None,
                  channels_last: bool) -> tuple[torch.Tensor, ...]:
    if batch.ndim != 5 or batch.shape[1] != count:
        raise ValueError(f"expected a (B, {count}, 3, S, S) batch, got {tuple(batch.shape)}")
    batch = batch.to(device, non_blocking=True) if device is not None else batch
    frames = batch.float().div_(255)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    return tuple(frames[:, t].contiguous(memory_format=memory) for t in range(count))


Item = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _Augmented(Dataset):
    """``timed``: items are ``(triplet, t)`` pairs, t the middle frame's time as a float32
    tensor (after the temporal swap), for models that take any time. ``windows``: items
    are ``(frames, t, valid)`` with five frames (see the module docstring)."""

    def __init__(self, crop: int, augmented: bool, seed: int, timed: bool = False, windows: bool = False) -> None:
        self.crop = crop
        self.augmented = augmented
        self.seed = seed
        self.epoch = 0
        self.timed = timed
        self.windows = windows

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's augmentations (call before iterating; DataLoader workers are re-made each epoch)."""
        self.epoch = int(epoch)

    def _finish(self, frames: np.ndarray, index: int, time: float = 0.5, valid: bool = False) -> Item:
        if self.augmented:
            frames, swapped = augment_timed(frames, np.random.default_rng([self.seed, self.epoch, index]), self.crop)
            time = 1 - time if swapped else time
        else:
            frames = centre_crop(frames, self.crop)
        if not frames.flags.writeable:  # a memory-mapped cache row, when the crop is the whole patch
            frames = frames.copy()
        if self.windows:
            return (torch.from_numpy(frames), torch.tensor(time, dtype=torch.float32),
                    torch.tensor(1.0 if valid else 0.0, dtype=torch.float32))
        if self.timed:
            return torch.from_numpy(frames), torch.tensor(time, dtype=torch.float32)
        return torch.from_numpy(frames)


class TripletDataset(_Augmented):
    """Triplets ``indices`` of a ``PatchCache`` (all when None), cropped and augmented.

    ``augmented=False`` (validation) gives the centre crop, unchanged. ``windows=True``
    reads the cache's five-frame windows (``PatchCache.window``); a version-1 cache has no
    neighbours, so its items hold copies of frame0 and frame1 and ``valid`` 0.
    """

    def __init__(self, cache: PatchCache, indices: Sequence[int] | None = None, crop: int = 128,
                 augmented: bool = True, seed: int = 0, timed: bool = False, windows: bool = False) -> None:
        super().__init__(crop, augmented, seed, timed, windows)
        if crop > cache.size:
            raise InputError(f"crop of {crop} px is larger than the cache's {cache.size} px patches")
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Item:
        index = int(self.indices[i])
        if self.windows:
            frames, valid = self.cache.window(index)
            return self._finish(np.asarray(frames), index, valid=valid)
        return self._finish(np.asarray(self.cache[index]), index)


class SceneDataset(_Augmented):
    """``length`` procedural scenes per epoch, rendered when read (see ``data.synthetic``).

    Item ``i`` of epoch ``e`` is scene ``e * length + i`` of stream ``seed`` (new scenes every
    epoch) or, with ``fixed=True`` (validation), scene ``i`` every epoch. Scenes render at
    ``config.size`` px and are cropped like cache patches. ``photos`` is a folder of images
    or a ``PhotoBank``; rendering is on the CPU (this runs in DataLoader workers).
    ``h264``: the share of scenes that go through a libx264 round trip at a CRF drawn
    from ``crf`` (``data.codec``), as footage has been: all frames as one clip, or only
    the inputs when the renderer keeps a clean target (``clean_target``).
    ``windows``: five frames at t = -1, 0, t, 1, 2, ``valid`` 1 but for the few scenes
    whose neighbours are degenerate (``synthetic.MAX_ZOOM``); the triplet frames are those of ``windows=False`` (but for the h264
    round trip, which then codes all five frames as one clip).
    """

    def __init__(self, photos: str | Path | object, length: int, crop: int = 128, augmented: bool = True,
                 seed: int = 0, fixed: bool = False, config: object | None = None, timed: bool = False,
                 h264: float = 0.0, crf: tuple[int, int] = (18, 36), windows: bool = False) -> None:
        from sepconv_cli.data.synthetic import SceneConfig, SceneRenderer

        super().__init__(crop, augmented, seed, timed, windows)
        self.h264 = h264
        self.crf = crf
        config = config or SceneConfig()
        if crop > config.size:
            raise InputError(f"crop of {crop} px is larger than the {config.size} px scenes")
        if length < 1:
            raise InputError("a scene dataset needs at least one scene per epoch")
        self.renderer = SceneRenderer(photos, config, device="cpu")
        self.length = int(length)
        self.fixed = fixed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Item:
        scene = i if self.fixed else self.epoch * self.length + i
        rendered = self.renderer.render([scene], seed=self.seed, windows=self.windows)
        frames = rendered.to_uint8()[0]
        if self.h264 > 0:
            from sepconv_cli.data.codec import h264_roundtrip

            rng = np.random.default_rng([self.seed, scene, 0x264])
            if rng.random() < self.h264:
                middle = 2 if self.windows else 1
                coded = [k for k in range(len(frames)) if k != middle or not self.renderer.config.clean_target]
                frames[coded] = h264_roundtrip(frames[coded], int(rng.integers(self.crf[0], self.crf[1] + 1)))
        valid = bool(rendered.valid[0]) if self.windows else False
        return self._finish(frames, scene, float(rendered.times[0]), valid=valid)


def split_cache(cache: PatchCache, fraction: float, seed: int = 0, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation triplet indices of ``cache``.

    Whole units (blocks of consecutive triplets of one sequence) are held out, so that a
    validation triplet's near-duplicate neighbours are not trained on; with a single unit
    the split falls back to single triplets. About ``fraction`` of the triplets (at least
    one, at most ``limit``) go to validation; ``fraction = 0`` gives no validation set.
    """
    n = len(cache)
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    want = max(1, int(round(fraction * n)))
    if limit is not None:
        want = min(want, limit)
    rng = np.random.default_rng([seed, 0x5A11])
    counts = [u.patches for u in cache.index.units if u.patches and u.shard]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    held: list[np.ndarray] = []
    total = 0
    for unit in rng.permutation(len(counts)):
        if total >= want:
            break
        if total + counts[unit] <= 2 * want:  # a unit far larger than wanted is skipped
            held.append(np.arange(starts[unit], starts[unit] + counts[unit]))
            total += counts[unit]
    if total == 0 or total >= n:  # one unit, or units too large: hold out single triplets
        val = np.sort(rng.permutation(n)[:want])
    else:
        val = np.sort(np.concatenate(held))
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    # Held-out triplets beyond ``limit`` are neither trained on nor validated.
    return np.flatnonzero(mask), val[:limit] if limit is not None else val


class MixedDataset(Dataset):
    """Items alternate between ``datasets`` (round robin), an equal share each.

    The first dataset sets the epoch's length (``len(datasets) * len(first)``); the others
    contribute as many items, and where one is longer its window moves on every epoch
    (``set_epoch``), so over enough epochs all of it is used; where shorter, it repeats.
    ``windows`` says which items the mixed datasets yield: all must agree, since a batch
    cannot hold triplets and windows together.
    """

    def __init__(self, datasets: Sequence[Dataset], windows: bool = False) -> None:
        if not datasets or any(len(d) == 0 for d in datasets):
            raise InputError("every dataset to mix needs at least one item")
        odd = [type(d).__name__ for d in datasets if bool(getattr(d, "windows", False)) != windows]
        if odd:
            raise ValueError(f"MixedDataset(windows={windows}) cannot mix in {', '.join(odd)} with windows={not windows}")
        self.datasets = list(datasets)
        self.windows = windows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.datasets) * len(self.datasets[0])

    def __getitem__(self, i: int):  # noqa: ANN204 - whatever the mixed datasets yield
        k = len(self.datasets)
        dataset = self.datasets[i % k]
        return dataset[(self.epoch * len(self.datasets[0]) + i // k) % len(dataset)]
