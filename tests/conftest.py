from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from sepconv_cli.models.registry import build_model, save_weights

# Tiny networks keep the suite to seconds on two CPU cores; the architecture, padding
# and synthesis code paths are the same as the full 21.7 M-parameter model's.
TINY_SEPCONV = {"kernel_size": 5, "channels": [4, 4, 8, 8, 8]}


# Where a compiler exists the compiled CPU kernels must build: a failed build fails the
# tests marked with this rather than quietly testing the PyTorch fall-back twice.
needs_cxx = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="needs a C++ compiler")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts background commands (`.ci/run &`, nohup) with
    # SIGINT ignored, and children inherit that: the Ctrl-C tests' subprocesses would then
    # never see their SIGINT. The tests are about Ctrl-C reaching sepconv, so the suite
    # gives its children the default disposition whatever it was started with.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def one_torch_thread() -> object:
    """Tiny networks run fastest on one thread, most of all on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_sepconv() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("sepconv", TINY_SEPCONV).eval()


TINY_DSEPCONV = {"kernel_size": 3, "channels": [4, 4, 8, 8, 8]}


@pytest.fixture
def tiny_dsepconv() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("dsepconv", TINY_DSEPCONV).eval()


@pytest.fixture(scope="session")
def flowsep_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained flowsep's weights file: the optical-flow baseline, real motion with no training."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "flowsep.pt"
    save_weights(build_model("flowsep", {"channels": [4, 8, 8, 8]}), path)
    return path
