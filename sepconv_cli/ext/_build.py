"""JIT build of the compiled kernels (CPU and CUDA), with a quiet fall-back to PyTorch.

``torch.utils.cpp_extension.load`` compiles on first use and caches the result under
``TORCH_EXTENSIONS_DIR`` keyed by a hash of the sources, so later runs load in well under
a second. Anything that goes wrong (no compiler or nvcc, a compiler error, a stale lock
left by a build that was killed) must not stop interpolation: we warn once and return
``None``, and the caller uses the pure-PyTorch path. ``SEPCONV_NO_EXT=1`` turns every
compiled kernel off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).with_name("csrc")

# A lock older than this cannot belong to a build still running: compiling our
# kernels takes about a minute.
STALE_LOCK_SECONDS = 600
LOCK_POLL_SECONDS = 0.5

_loaded: dict[str, ModuleType | None] = {}

logger = logging.getLogger(__name__)


def _warn(message: str) -> None:
    warnings.warn(f"sepconv: {message}; using the PyTorch implementation instead", RuntimeWarning, stacklevel=3)


def _build_directory(name: str) -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    return Path(root) / name


def _disabled() -> bool:
    return os.environ.get("SEPCONV_NO_EXT", "") not in ("", "0")


def _cpu_tag() -> str:
    """A short hash of the CPU's model and instruction-set flags.

    CPU kernels are built with ``-march=native``; naming the build after the CPU keeps a
    cache directory shared between different machines (an NFS home) from handing one
    machine's binary to another that lacks its instructions.
    """
    description = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features")):
                    description += line
                if line.strip() == "":
                    break  # the first processor describes them all
    except OSError:
        pass
    return hashlib.sha1(description.encode()).hexdigest()[:8]


def _cpu_flags() -> list[str]:
    if sys.platform.startswith("linux"):
        # OpenMP drives ATen's parallel_for; at run time the extension shares the libgomp
        # that torch has already loaded (same soname), so thread settings carry over.
        return ["-O3", "-march=native", "-fopenmp"]
    if sys.platform == "win32":
        return ["/O2", "/openmp"]
    return ["-O3"]  # Apple clang: no -fopenmp; parallel_for then runs on one thread


def _headers_flag() -> str:
    """A define naming the hash of ``csrc/*.h``: the JIT cache hashes only the listed sources
    and the flags, so this makes a changed shared header rebuild the kernels that include it."""
    digest = hashlib.sha1()
    for header in sorted(CSRC.glob("*.h")):
        digest.update(header.read_bytes())
    return f"-DSEPCONV_HEADERS={digest.hexdigest()[:12]}"


def _wait_for_lock(lock: Path, name: str) -> bool:
    """Wait while another process may be building ``name``; False once its lock is stale.

    torch's own wait for the lock has no end, so a build killed by a signal (its lock is
    never removed) would hang every later start; we wait only as long as a live build can
    take, measured from when the lock was made.
    """
    announced = False
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return True
        if age > STALE_LOCK_SECONDS:
            return False
        if not announced:
            logger.warning("waiting for another process's build of %s (delete %s if none is running)", name, lock)
            announced = True
        time.sleep(LOCK_POLL_SECONDS)


def _build(name: str, sources: list[str], cuda: bool) -> ModuleType | str | None:
    """The built pybind11 module (CUDA), or the path of the loaded operator library (CPU)."""
    lock = _build_directory(name) / "lock"
    kind = "CUDA" if cuda else "CPU"
    if not _wait_for_lock(lock, name):
        _warn(f"the {kind} build of {name} was interrupted earlier; delete {lock} to rebuild it")
        return None
    if not any(_build_directory(name).glob(f"{name}.*")):
        logger.info(
            "compiling the %s kernels %s, once per machine (%s)", kind, name, "about a minute" if cuda else "about 20 s"
        )
    cflags = (["-O3"] if cuda else _cpu_flags()) + [_headers_flag()]
    try:
        from torch.utils.cpp_extension import load

        return load(
            name=name,
            sources=[str(CSRC / s) for s in sources],
            extra_cflags=cflags,
            extra_cuda_cflags=["-O3", _headers_flag()],
            extra_ldflags=["-fopenmp"] if "-fopenmp" in cflags else None,
            is_python_module=cuda,
            verbose=os.environ.get("SEPCONV_VERBOSE_BUILD", "") not in ("", "0"),
        )
    except Exception as exc:  # noqa: BLE001 - any build failure means: fall back
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _warn(f"could not build the {kind} extension {name} ({first_line})")
        return None


def load_extension(name: str, sources: list[str]) -> ModuleType | None:
    """Compile (once) and load the CUDA extension ``name`` built from ``csrc/<sources>``.

    Returns ``None`` with a single warning when the build fails, and without one when
    there is no GPU or ``SEPCONV_NO_EXT=1``.
    """
    if name in _loaded:
        return _loaded[name]
    _loaded[name] = None
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return None
    if _disabled():
        return None
    # Build only for the GPU that is present: a fat binary for every architecture
    # takes several times longer to compile and is never used.
    if "TORCH_CUDA_ARCH_LIST" not in os.environ:
        major, minor = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    _loaded[name] = _build(name, sources, cuda=True)
    return _loaded[name]


def load_cpu_extension(name: str, sources: list[str]) -> ModuleType | None:
    """Compile (once per CPU type) and load the CPU operators from ``csrc/<sources>``.

    The sources register their operators with ``TORCH_LIBRARY(<name>, ...)``, not as a
    pybind11 module (a quarter of the compile time); the returned namespace is
    ``torch.ops.<name>``. Needs a C++ compiler. Returns ``None`` with a single warning
    when the build fails, and without one when ``SEPCONV_NO_EXT=1``.
    """
    if name in _loaded:
        return _loaded[name]
    _loaded[name] = None
    if _disabled():
        return None
    if _build(f"{name}_{_cpu_tag()}", sources, cuda=False) is not None:
        _loaded[name] = getattr(torch.ops, name)
    return _loaded[name]
