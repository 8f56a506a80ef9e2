"""The on-disk patch cache that ``sepconv prepare`` writes and ``sepconv train`` reads.

Layout of a cache folder (format version 2, what ``prepare`` writes)::

    CACHE/
      index.json              provenance, parameters, per-unit counts (see ``CacheIndex``)
      shards/000000.npy       uint8 array (N, 5, 3, S, S): N windows of frames
                              [before, frame0, middle, frame1, after], RGB, S x S pixels
      shards/000000.valid.npy uint8 array (N,): which neighbours exist (``BEFORE | AFTER``)
      shards/000001.npy ...   one shard (and flags) per finished unit of work
      flow-histogram.png      (frame sources only) mean-flow magnitudes of kept patches

Version 1 shards hold (N, 3, 3, S, S) triplets [frame0, middle, frame1] and no flags;
``PatchCache`` reads both. ``before`` and ``after`` lie one input interval before frame0
and after frame1 (frames i - s and i + 3s around the triplet i, i + s, i + 2s); where one
does not exist (the sequence ends, a shot cut, an unreadable frame) the window holds a
copy of the adjacent input frame instead and its flag bit is clear.

A *unit* is a block of consecutive triplets of one sequence (or a block of synthetic
scenes). Units are numbered in a fixed order and each finished unit is written as one
shard (atomically, then recorded in the index), so an interrupted ``prepare`` resumes at
the first unfinished unit and produces the same bytes as an uninterrupted run.

Shards are plain ``.npy`` files, so the reader memory-maps them: opening a cache costs
nothing, and reading a patch touches only its own bytes (3*3*S*S, or 5*3*S*S and one flag).
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
TRIPLET_VERSION = 1  # shards of (N, 3, 3, S, S) triplets
WINDOW_VERSION = 2  # shards of (N, 5, 3, S, S) windows, with neighbour flags beside them
FORMAT_VERSION = WINDOW_VERSION  # what ``sepconv prepare`` writes by default
READ_VERSIONS = (TRIPLET_VERSION, WINDOW_VERSION)
FRAMES = {TRIPLET_VERSION: 3, WINDOW_VERSION: 5}  # frames per item of each version
# Neighbour flags of a window: which of its outer frames are real (not a copy).
BEFORE = 1
AFTER = 2
BOTH = BEFORE | AFTER
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
    # Triplets unless a writer says otherwise: code that builds small caches by hand
    # (adaptation, tests, benchmarks) writes triplet shards.
    version: int = TRIPLET_VERSION

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
    if data.get("version") not in READ_VERSIONS:
        raise InputError(
            f"patch cache {root} has format version {data.get('version')}, this sepconv reads "
            f"versions {' and '.join(map(str, READ_VERSIONS))}; run 'sepconv prepare' again into a new folder"
        )
    try:
        return CacheIndex.from_dict(data)
    except TypeError as exc:
        raise InputError(f"{path} is damaged: {exc}") from None


def write_index(root: Path, index: CacheIndex) -> None:
    """Replace ``index.json`` atomically (a crash leaves the old or the new one, never half)."""
    _atomic_write(index_path(root), index.to_json().encode())


def valid_name(shard: str) -> str:
    """Relative path of the neighbour flags beside shard ``shard`` (``.../000000.valid.npy``)."""
    return shard[: -len(".npy")] + ".valid.npy"


def write_shard(root: Path, number: int, patches: np.ndarray, valid: np.ndarray | None = None) -> str:
    """Write shard ``number``; return its relative path.

    ``patches``: (N, 3, 3, S, S) uint8 triplets (version 1), or (N, 5, 3, S, S) uint8
    windows (version 2) with ``valid``, N uint8 neighbour flags (``BEFORE | AFTER``).
    The flags are written first, so a shard on disk always has its flags.
    """
    if patches.dtype != np.uint8 or patches.ndim != 5 or patches.shape[1:3] not in ((3, 3), (5, 3)):
        raise ValueError(f"expected (N, 3 or 5, 3, S, S) uint8 patches, got {patches.dtype} {patches.shape}")
    windows = patches.shape[1] == 5
    if windows != (valid is not None):
        raise ValueError("windows of five frames need their neighbour flags, triplets have none")
    rel = f"{SHARD_DIR}/{number:06d}.npy"
    if valid is not None:
        valid = np.asarray(valid)
        if valid.dtype != np.uint8 or valid.shape != (len(patches),):
            raise ValueError(f"expected ({len(patches)},) uint8 neighbour flags, got {valid.dtype} {valid.shape}")
        _atomic_save(Path(root) / valid_name(rel), valid)
    _atomic_save(Path(root) / rel, patches)
    return rel


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


class PatchCache:
    """Read-only view of a finished (or partly finished) patch cache, of either version.

    ``len(cache)`` is the number of patches; ``cache[i]`` is a ``(3, 3, S, S)`` uint8
    triplet (frame0, middle, frame1; RGB; rows; columns) read from a memory-mapped shard,
    whatever the version. ``cache.window(i)`` is ``(window, valid)``: the ``(5, 3, S, S)``
    frames [before, frame0, middle, frame1, after] and whether both neighbours are real
    (a version-1 cache has none: copies of frame0 and frame1, ``valid`` False).
    Convert with ``torch.from_numpy(cache[i]).float() / 255`` (copying first if you need
    a writable array). Safe to use from several ``DataLoader`` workers: each process
    maps the shards lazily on first access.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.index = read_index(self.root)
        self.size = int(self.index.size)
        self.version = int(self.index.version)
        self._frames = FRAMES[self.version]
        self._shards: list[str] = []
        counts: list[int] = []
        for unit in self.index.units:
            if unit.patches and unit.shard:
                needed = [unit.shard] + ([valid_name(unit.shard)] if self.has_windows else [])
                for rel in needed:
                    if not (self.root / rel).is_file():
                        raise InputError(f"patch cache {self.root} is missing {rel}; run 'sepconv prepare' again")
                self._shards.append(unit.shard)
                counts.append(unit.patches)
        if not counts:
            raise InputError(f"patch cache {self.root} holds no triplets")
        self._ends = np.cumsum(counts)
        self._maps: dict[int, np.ndarray] = {}
        self._valid: dict[int, np.ndarray] = {}

    @property
    def complete(self) -> bool:
        """False when the ``prepare`` run that made the cache was interrupted."""
        return bool(self.index.complete)

    @property
    def has_windows(self) -> bool:
        """True when the shards hold five-frame windows (version 2), False for triplets."""
        return self.version == WINDOW_VERSION

    def __len__(self) -> int:
        return int(self._ends[-1])

    def _load(self, rel: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.root / rel
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        if arr.dtype != np.uint8 or arr.shape[1:] != shape[1:] or (shape[0] >= 0 and arr.shape[0] != shape[0]):
            want = ", ".join("N" if n < 0 else str(n) for n in shape)
            raise InputError(f"{path} has shape {arr.shape} {arr.dtype}, expected ({want}) uint8")
        return arr

    def _shard(self, number: int) -> np.ndarray:
        arr = self._maps.get(number)
        if arr is None:
            arr = self._load(self._shards[number], (-1, self._frames, 3, self.size, self.size))
            self._maps[number] = arr
        return arr

    def _flags(self, number: int) -> np.ndarray:
        arr = self._valid.get(number)
        if arr is None:
            arr = self._load(valid_name(self._shards[number]), (len(self._shard(number)),))
            self._valid[number] = arr
        return arr

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"triplet {i} out of range for a cache of {n}")
        i %= n
        shard = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[shard - 1]) if shard else 0
        return shard, i - start

    def __getitem__(self, i: int) -> np.ndarray:
        shard, row = self._locate(i)
        if self.has_windows:
            return self._shard(shard)[row, 1:4]
        return self._shard(shard)[row]

    def window(self, i: int) -> tuple[np.ndarray, bool]:
        """``((5, 3, S, S) uint8 frames [before, frame0, middle, frame1, after], valid)``.

        ``valid`` is True when both neighbours are real frames; where one is missing the
        window holds a copy of the adjacent input frame in its place.
        """
        shard, row = self._locate(i)
        if not self.has_windows:
            triplet = self._shard(shard)[row]
            return np.stack([triplet[0], *triplet, triplet[2]]), False
        return self._shard(shard)[row], int(self._flags(shard)[row]) == BOTH

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are not sent to DataLoader workers; each re-opens what it reads.
        state = self.__dict__.copy()
        state["_maps"] = {}
        state["_valid"] = {}
        return state
