"""The CUDA extension loader falls back to PyTorch, with one warning, whatever goes wrong."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from sepconv_cli.ext import _build


@pytest.fixture
def pretend_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("SEPCONV_NO_EXT", raising=False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)  # the loader sets it; restore after
    monkeypatch.setattr(_build, "_loaded", {})
    return tmp_path


def test_a_failed_build_warns_once_and_falls_back(pretend_cuda: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken_load(**kwargs: object) -> None:
        calls.append(kwargs)
        raise RuntimeError("nvcc fatal: Unsupported gpu architecture 'compute_90'\nmore detail")

    monkeypatch.setattr("torch.utils.cpp_extension.load", broken_load)
    with pytest.warns(RuntimeWarning, match="could not build the CUDA extension demo .*Unsupported gpu"):
        assert _build.load_extension("demo", ["a.cu"]) is None
    assert _build.load_extension("demo", ["a.cu"]) is None  # cached: no second build, no second warning
    assert len(calls) == 1
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "9.0"


def test_a_stale_lock_is_reported_with_what_to_delete(pretend_cuda: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = pretend_cuda / "demo" / "lock"
    lock.parent.mkdir()
    lock.touch()
    old = time.time() - 2 * _build.STALE_LOCK_SECONDS
    os.utime(lock, (old, old))
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: pytest.fail("must not build"))
    with pytest.warns(RuntimeWarning, match=f"delete {lock}"):
        assert _build.load_extension("demo", ["a.cu"]) is None


def test_no_gpu_or_opt_out_builds_nothing(monkeypatch: pytest.MonkeyPatch, pretend_cuda: Path) -> None:
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: pytest.fail("must not build"))
    monkeypatch.setenv("SEPCONV_NO_EXT", "1")
    assert _build.load_extension("demo", ["a.cu"]) is None
    monkeypatch.setattr(_build, "_loaded", {})
    monkeypatch.delenv("SEPCONV_NO_EXT")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _build.load_extension("demo", ["a.cu"]) is None


def test_a_failed_cpu_build_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("SEPCONV_NO_EXT", raising=False)
    monkeypatch.setattr(_build, "_loaded", {})
    calls = []

    def broken_load(**kwargs: object) -> None:
        calls.append(kwargs)
        raise RuntimeError("Error building extension 'demo': c++: command not found")

    monkeypatch.setattr("torch.utils.cpp_extension.load", broken_load)
    caplog.set_level("INFO", logger="sepconv_cli.ext._build")
    with pytest.warns(RuntimeWarning, match=r"could not build the CPU extension demo_\w+ .*command not found"):
        assert _build.load_cpu_extension("demo", ["a.cpp"]) is None
    assert _build.load_cpu_extension("demo", ["a.cpp"]) is None
    assert len(calls) == 1
    # Named after the CPU, because -march=native binaries must not travel between machines.
    assert calls[0]["name"] == f"demo_{_build._cpu_tag()}"
    assert calls[0]["is_python_module"] is False
    assert "compiling the CPU kernels demo_" in caplog.text


def test_a_fresh_lock_left_by_a_killed_build_does_not_hang(pretend_cuda: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A build killed by SIGTERM leaves its lock behind; torch would wait on it for ever.
    lock = pretend_cuda / "demo" / "lock"
    lock.parent.mkdir()
    lock.touch()
    monkeypatch.setattr(_build, "STALE_LOCK_SECONDS", 0.3)
    monkeypatch.setattr(_build, "LOCK_POLL_SECONDS", 0.05)
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: pytest.fail("must not build"))
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match=f"delete {lock}"):
        assert _build.load_extension("demo", ["a.cu"]) is None
    assert time.monotonic() - started < 5


def test_a_lock_released_by_a_live_build_is_waited_for(pretend_cuda: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = pretend_cuda / "demo" / "lock"
    lock.parent.mkdir()
    lock.touch()
    monkeypatch.setattr(_build, "LOCK_POLL_SECONDS", 0.05)
    built = object()
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: built if not lock.exists() else None)
    threading.Timer(0.3, lock.unlink).start()
    assert _build.load_extension("demo", ["a.cu"]) is built
