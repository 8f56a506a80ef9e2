"""What a run learns from and validates on, from its ``TrainConfig``: a patch cache (split
into training and held-out triplets), procedural scenes, or both mixed, an optional
held-out cache of other footage, and the loaders that feed them to this process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader, Dataset

from sepconv_cli.data.cache import PatchCache
from sepconv_cli.data.dataset import MixedDataset, SceneDataset, TripletDataset, split_cache
from sepconv_cli.errors import InputError
from sepconv_cli.training.config import Note, TrainConfig
from sepconv_cli.training.distributed import Distributed, EpochSampler


@dataclass
class RunData:
    """A run's datasets and this process's loaders. ``description`` names the data in the
    run's messages and files; ``total_steps`` is None when only a time budget ends the run."""

    description: str
    train_set: Dataset
    val_set: Dataset | None
    sampler: EpochSampler
    steps_per_epoch: int
    total_steps: int | None
    loader: DataLoader
    val_loader: DataLoader | None


@dataclass(frozen=True)
class _Shape:
    """What the network needs of each item: a random time t, the frames around the pair."""

    timed: bool
    windows: bool

    @classmethod
    def of(cls, network: nn.Module) -> _Shape:
        # Four-frame models learn from windows: the frames around each pair come along.
        return cls(timed=bool(getattr(network, "any_time", False)),
                   windows=bool(getattr(getattr(network, "config", None), "quadratic", False)))


def held_out_dataset(cache: PatchCache, network: nn.Module) -> TripletDataset:
    """Every item of ``cache`` as a run validates ``network`` on it (``TrainConfig.val_data``):
    centre crops of a side the network's stride divides, with the times and, for four-frame
    models, the neighbour frames that the network takes."""
    shape = _Shape.of(network)
    crop = cache.size - cache.size % network.stride
    return TripletDataset(cache, None, crop, augmented=False, timed=shape.timed, windows=shape.windows)


def build_run_data(config: TrainConfig, network: nn.Module, env: Distributed, per_rank: int, note: Note) -> RunData:
    """The datasets and loaders of ``config`` for ``network``, split among ``env``'s processes
    ``per_rank`` items a step. Sets ``config.data`` to the cache used when it was left to the
    default, so that a resume reads the same one. Raises ``InputError`` on data that cannot
    feed the run (patches smaller than the crop, fewer triplets than a batch)."""
    c = config
    shape = _Shape.of(network)
    if c.synthetic:
        description, train_set, val_set = _scene_sets(c, shape)
        if c.data:
            train_set, footage = _mixed_with_footage(c, train_set, shape)
            description += footage
    else:
        description, train_set, val_set = _cache_sets(c, shape, note)
    if c.val_data:
        held_out = PatchCache(c.val_data)
        val_set = held_out_dataset(held_out, network)
        description += f"; validated on patch cache {c.val_data} ({len(held_out)} triplets)"
    return _with_loaders(c, env, per_rank, description, train_set, val_set)


def _scene_sets(c: TrainConfig, shape: _Shape) -> tuple[str, Dataset, Dataset | None]:
    from sepconv_cli.data.synthetic import SceneConfig

    scenes = SceneConfig(size=c.scene_size, max_motion=c.max_motion, random_time=shape.timed,
                         clean_target=c.clean_target, static_fraction=c.static_fraction, p_elastic=c.elastic)
    if c.crop > scenes.size:
        raise InputError(f"--crop {c.crop} is larger than the {scenes.size} px scenes (--scene-size)")
    train_set = SceneDataset(c.synthetic, c.scenes_per_epoch, c.crop, seed=c.seed, config=scenes, timed=shape.timed,
                             h264=c.h264, windows=shape.windows)
    val_set = (SceneDataset(c.synthetic, c.val_scenes, c.crop, augmented=False, seed=c.seed + 1, fixed=True,
                            config=scenes, timed=shape.timed, h264=c.h264, windows=shape.windows)
               if c.val_scenes > 0 else None)
    return f"procedural scenes from {c.synthetic}", train_set, val_set


def _mixed_with_footage(c: TrainConfig, scenes: Dataset, shape: _Shape) -> tuple[Dataset, str]:
    """The scenes mixed with every triplet of the patch cache ``c.data``, and how to say so."""
    cache = PatchCache(c.data)
    if cache.size < c.crop:
        raise InputError(f"patch cache {c.data} holds {cache.size} px patches, smaller than --crop {c.crop}")
    footage = TripletDataset(cache, None, c.crop, seed=c.seed, timed=shape.timed, windows=shape.windows)
    return (MixedDataset([scenes, footage], windows=shape.windows),
            f" mixed with patch cache {c.data} ({len(cache)} triplets)")


def _cache_sets(c: TrainConfig, shape: _Shape, note: Note) -> tuple[str, Dataset, Dataset | None]:
    from sepconv_cli.data.cache import default_cache_dir

    root = Path(c.data) if c.data else default_cache_dir()
    c.data = str(root)
    cache = PatchCache(root)
    if cache.size < c.crop:
        raise InputError(f"patch cache {root} holds {cache.size} px patches, smaller than --crop {c.crop}")
    if not cache.complete:
        note(f"{root} is incomplete (an interrupted 'sepconv prepare'); training on its {len(cache)} triplets")
    train_idx, val_idx = split_cache(cache, c.val_fraction, c.seed, c.val_max)
    train_set = TripletDataset(cache, train_idx, c.crop, seed=c.seed, windows=shape.windows)
    val_set = TripletDataset(cache, val_idx, c.crop, augmented=False, windows=shape.windows) if len(val_idx) else None
    return f"patch cache {root} ({len(cache)} triplets of {cache.size} px)", train_set, val_set


def _with_loaders(c: TrainConfig, env: Distributed, per_rank: int, description: str, train_set: Dataset,
                  val_set: Dataset | None) -> RunData:
    sampler = EpochSampler(train_set, env.world, env.rank, c.seed)
    steps_per_epoch = sampler.num_samples // per_rank
    if steps_per_epoch == 0:
        raise InputError(f"only {len(train_set)} training triplets: fewer than one batch of {c.batch_size}; "
                         "prepare more or lower --batch-size")
    limits = [c.max_steps] if c.max_steps is not None else []
    if c.epochs is not None:
        limits.append(c.epochs * steps_per_epoch)
    cuda = env.device.type == "cuda"
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=c.workers,
                        pin_memory=cuda, persistent_workers=False)
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(val_set, batch_size=max(1, per_rank), shuffle=False, num_workers=min(c.workers, 2),
                                pin_memory=cuda)
    return RunData(description, train_set, val_set, sampler, steps_per_epoch, min(limits) if limits else None,
                   loader, val_loader)
