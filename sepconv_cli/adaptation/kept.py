"""Kept adaptations: ``adapted_weights`` is ``adapt`` with a cache keyed by the input's bytes,
the base weights' bytes and the options, so that a second run on the same input (other
output settings) reuses the work."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sepconv_cli.adaptation.fine_tuning import adapt
from sepconv_cli.adaptation.options import AdaptOptions, AdaptResult, Note, Progress
from sepconv_cli.errors import InputError, OutputError

# Of the cached adaptations: bump when a change makes old ones stale (3: four-frame models
# are trained and judged with their neighbour frames, which version 2 withheld).
FORMAT_VERSION = 3


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
    if not isinstance(data, dict) or not weights.is_file() or data.get("version") != FORMAT_VERSION:
        return None
    names = ("adapted", "base_psnr", "best_psnr", "steps", "seconds", "train_triplets", "held_out_triplets",
             "margin", "tried_gain")
    if any(name not in data for name in names):  # a record cut short or edited: adapt again
        return None
    gains = data.get("scale_gains")
    return AdaptResult(weights, reused=True, scale_gains=tuple(gains) if isinstance(gains, list) else None,
                       **{name: data[name] for name in names})


def _keep(folder: Path, key: str, result: AdaptResult) -> Path:
    """Copy the result's weights into the cache (atomically: a half-written file never has the final name)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{key}.pt"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{key}.", suffix=".partial", delete=False) as tmp:
            with open(result.weights, "rb") as src:
                shutil.copyfileobj(src, tmp)
        os.replace(tmp.name, target)
        # ``tried`` names a file in the adaptation's work folder, gone once it returns.
        record = {"version": FORMAT_VERSION,
                  **{k: v for k, v in asdict(result).items() if k not in ("weights", "reused", "tried")}}
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
