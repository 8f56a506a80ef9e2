"""Training data: the patch cache, ``prepare`` from real footage, procedural scenes.

- ``PatchCache(path)``: read a cache made by ``sepconv prepare`` (``cache[i]`` is a
  ``(3, 3, S, S)`` uint8 triplet); ``default_cache_dir()`` is where it lives by default.
- ``prepare_frames`` / ``prepare_synthetic``: fill a cache (used by the CLI).
- ``SceneRenderer`` / ``PhotoBank`` / ``SceneConfig``: render synthetic triplets on the
  fly (GPU when there is one), e.g. for training without a cache.

``synthetic`` imports torch; it is loaded only when one of its names is used.
"""

from __future__ import annotations

from typing import Any

from sepconv_cli.data.cache import CacheIndex, PatchCache, default_cache_dir, read_index
from sepconv_cli.data.prepare import (
    PrepareSummary,
    SelectionParams,
    find_sequences,
    keep_probability,
    prepare_frames,
    prepare_synthetic,
)

__all__ = [
    "CacheIndex",
    "PatchCache",
    "PhotoBank",
    "PrepareSummary",
    "SceneConfig",
    "SceneRenderer",
    "Scenes",
    "SelectionParams",
    "default_cache_dir",
    "find_sequences",
    "keep_probability",
    "prepare_frames",
    "prepare_synthetic",
    "read_index",
]

_SYNTHETIC = {"PhotoBank", "SceneConfig", "SceneRenderer", "Scenes"}


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC:
        from sepconv_cli.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
