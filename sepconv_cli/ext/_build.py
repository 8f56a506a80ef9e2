"""JIT build of the CUDA extensions, with a quiet fall-back to the PyTorch reference.

``torch.utils.cpp_extension.load`` compiles on first use and caches the result under
``TORCH_EXTENSIONS_DIR`` keyed by a hash of the sources, so later runs load in well under
a second. Anything that goes wrong (no nvcc, a compiler error, a stale lock left by a
build that was killed) must not stop interpolation: we warn once and return ``None``,
and the caller uses the pure-PyTorch path.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).with_name("csrc")

# A lock older than this cannot belong to a build still running: compiling our
# kernels takes about a minute.
STALE_LOCK_SECONDS = 600

_loaded: dict[str, ModuleType | None] = {}


def _warn(message: str) -> None:
    warnings.warn(f"sepconv: {message}; using the PyTorch implementation instead", RuntimeWarning, stacklevel=3)


def _build_directory(name: str) -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    return Path(root) / name


def load_extension(name: str, sources: list[str]) -> ModuleType | None:
    """Compile (once) and load the CUDA extension ``name`` built from ``csrc/<sources>``.

    Returns ``None`` with a single warning when there is no GPU, when the build is
    disabled with ``SEPCONV_NO_CUDA_EXT=1``, or when the build fails.
    """
    if name in _loaded:
        return _loaded[name]
    _loaded[name] = None
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return None
    if os.environ.get("SEPCONV_NO_CUDA_EXT", "") not in ("", "0"):
        return None

    lock = _build_directory(name) / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
        _warn(f"the CUDA build of {name} was interrupted earlier; delete {lock} to rebuild it")
        return None

    # Build only for the GPU that is present: a fat binary for every architecture
    # takes several times longer to compile and is never used.
    if "TORCH_CUDA_ARCH_LIST" not in os.environ:
        major, minor = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    try:
        from torch.utils.cpp_extension import load

        module = load(
            name=name,
            sources=[str(CSRC / s) for s in sources],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3"],
            verbose=os.environ.get("SEPCONV_VERBOSE_BUILD", "") not in ("", "0"),
        )
    except Exception as exc:  # noqa: BLE001 - any build failure means: fall back
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _warn(f"could not build the CUDA extension {name} ({first_line})")
        return None
    _loaded[name] = module
    return module
