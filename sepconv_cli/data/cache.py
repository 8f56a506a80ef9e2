"""The on-disk patch cache that ``sepconv prepare`` writes and ``sepconv train`` reads.

Layout of a cache folder::

    CACHE/
      index.json            provenance, parameters, per-unit counts (see ``CacheIndex``)
      shards/000000.npy     uint8 array (N, 3, 3, S, S): N triplets, frames t = 0, 0.5, 1,
      shards/000001.npy     RGB channels, S x S pixels; one shard per finished unit of work
      flow-histogram.png    (frame sources only) mean-flow magnitudes of kept patches

A *unit* is a block of consecutive triplets of one sequence (or a block of synthetic
scenes). Units are numbered in a fixed order and each finished unit is written as one
shard (atomically, then recorded in the index), so an interrupted ``prepare`` resumes at
the first unfinished unit and produces the same bytes as an uninterrupted run.

Shards are plain ``.npy`` files, so the reader memory-maps them: opening a cache costs
nothing, and reading a triplet touches only its own 3*3*S*S bytes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sepconv_cli.errors import InputError, OutputError

FORMAT_NAME = "sepconv-patches"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SHARD_DIR = "shards"
HISTOGRAM_NAME = "flow-histogram.png"


def default_cache_dir() -> Path:
    """Where ``prepare`` writes and ``train`` reads when no folder is given.

    ``$SEPCONV_CACHE`` when set, else ``./cache/patches`` under the working directory.
    """
    env = os.environ.get("SEPCONV_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("cache") / "patches"


@dataclass
class UnitRecord:
    """One finished unit of work: where its triplets went and what was counted."""

    number: int
    key: str  # e.g. "bear:0-15" (sequence and first/last triplet start) or "synthetic:0-255"
    shard: str | None  # relative path of the shard, None when the unit kept nothing
    patches: int
    counts: dict[str, Any] = field(default_factory=dict)  # ints, and per-bin histogram lists
    problems: list[str] = field(default_factory=list)  # skipped files, mixed sizes, ...


@dataclass
class CacheIndex:
    """Contents of ``index.json``.

    ``parameters`` holds everything that decides the bytes of the shards (source kind,
    patch size, patches per triplet, stride, selection constants, seed, shard sizes);
    a resumed run must match it exactly. ``counts`` are the totals over ``units``.
    """

    source: str
    kind: str  # "frames" (images/videos) or "synthetic"
    parameters: dict[str, Any]
    seed: int
    size: int
    units: list[UnitRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    histogram: dict[str, list[float]] | None = None
    problems: list[str] = field(default_factory=list)  # source-level: short sequences, bad videos
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    @property
    def patches(self) -> int:
        return sum(u.patches for u in self.units)

    def to_json(self) -> str:
        text = json.dumps(asdict(self), indent=1, sort_keys=True)
        # Lists of numbers (histograms) on one line each: readable, and a tenth the size.
        text = re.sub(r"\[\s+([-0-9.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        return text + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheIndex:
        units = [UnitRecord(**u) for u in data.get("units", [])]
        fields = {k: v for k, v in data.items() if k != "units"}
        return cls(units=units, **fields)


def index_path(root: Path) -> Path:
    return Path(root) / INDEX_NAME


def read_index(root: Path) -> CacheIndex:
    """Read and check ``root/index.json``; raise ``InputError`` saying what is wrong."""
    root = Path(root)
    path = index_path(root)
    if not root.exists():
        raise InputError(f"patch cache {root} does not exist; run 'sepconv prepare' first")
    if not path.is_file():
        raise InputError(f"{root} is not a patch cache (no {INDEX_NAME}); run 'sepconv prepare' first")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise InputError(f"{path} is not a sepconv patch cache index")
    if data.get("version") != FORMAT_VERSION:
        raise InputError(
            f"patch cache {root} has format version {data.get('version')}, this sepconv reads "
            f"version {FORMAT_VERSION}; run 'sepconv prepare' again into a new folder"
        )
    try:
        return CacheIndex.from_dict(data)
    except TypeError as exc:
        raise InputError(f"{path} is damaged: {exc}") from None


def write_index(root: Path, index: CacheIndex) -> None:
    """Replace ``index.json`` atomically (a crash leaves the old or the new one, never half)."""
    _atomic_write(index_path(root), index.to_json().encode())


def write_shard(root: Path, number: int, triplets: np.ndarray) -> str:
    """Write ``triplets`` (N, 3, 3, S, S) uint8 as shard ``number``; return its relative path."""
    if triplets.dtype != np.uint8 or triplets.ndim != 5 or triplets.shape[1:3] != (3, 3):
        raise ValueError(f"expected (N, 3, 3, S, S) uint8 triplets, got {triplets.dtype} {triplets.shape}")
    rel = f"{SHARD_DIR}/{number:06d}.npy"
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(triplets), allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return rel


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


class PatchCache:
    """Read-only view of a finished (or partly finished) patch cache.

    ``len(cache)`` is the number of triplets; ``cache[i]`` is a ``(3, 3, S, S)`` uint8
    array (frame t = 0, 0.5, 1; RGB; rows; columns), read from a memory-mapped shard.
    Convert with ``torch.from_numpy(cache[i]).float() / 255`` (copying first if you need
    a writable array). Safe to use from several ``DataLoader`` workers: each process
    maps the shards lazily on first access.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.index = read_index(self.root)
        self.size = int(self.index.size)
        self._shards: list[str] = []
        counts: list[int] = []
        for unit in self.index.units:
            if unit.patches and unit.shard:
                if not (self.root / unit.shard).is_file():
                    raise InputError(f"patch cache {self.root} is missing {unit.shard}; run 'sepconv prepare' again")
                self._shards.append(unit.shard)
                counts.append(unit.patches)
        if not counts:
            raise InputError(f"patch cache {self.root} holds no triplets")
        self._ends = np.cumsum(counts)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def complete(self) -> bool:
        """False when the ``prepare`` run that made the cache was interrupted."""
        return bool(self.index.complete)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def _shard(self, number: int) -> np.ndarray:
        arr = self._maps.get(number)
        if arr is None:
            path = self.root / self._shards[number]
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {path}: {exc}") from None
            if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[1:] != (3, 3, self.size, self.size):
                raise InputError(f"{path} has shape {arr.shape} {arr.dtype}, expected (N, 3, 3, {self.size}, {self.size}) uint8")
            self._maps[number] = arr
        return arr

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"triplet {i} out of range for a cache of {n}")
        i %= n
        shard = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[shard - 1]) if shard else 0
        return self._shard(shard)[i - start]

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are not sent to DataLoader workers; each re-opens what it reads.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state
