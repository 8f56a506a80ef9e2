"""FlowSep's fused synthesis: the compiled kernels against the PyTorch composition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sepconv_cli.engine import Interpolator
from sepconv_cli.ext.flowsep_synthesis import (
    KERNELS,
    flowsep_synthesis,
    flowsep_synthesis_reference,
    params_per_frame,
    reference_synthesis,
)
from sepconv_cli.ext.separable_conv import op_impl, select_extension
from sepconv_cli.models.registry import load_weights
from tests.conftest import needs_cxx

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "flowsep.pt"


def make_inputs(
    batch: int = 2, height: int = 8, width: int = 12, taps: int = 3, *, low: bool = True,
    dtype: torch.dtype = torch.float64, seed: int = 0, scale: float = 0.3,
) -> tuple:
    """Random inputs; flows of a few px reach outside the tiny frame, so borders are exercised."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=dtype)

    channels = 2 * params_per_frame(taps) + 3
    size = (height // 2, width // 2) if low else (height, width)
    params = (torch.randn(batch, channels, *size, generator=gen, dtype=dtype) * scale)
    return (
        rand(batch, 3, height, width), rand(batch, 3, height, width), rand(batch, 3, height, width),
        (rand(batch, 2, height, width) - 0.5) * 6, (rand(batch, 2, height, width) - 0.5) * 6,
        rand(batch, 1, height, width), params, rand(batch) * 0.5 + 0.5, taps,
    )


def compiled_available() -> bool:
    return select_extension(KERNELS, torch.device("cpu")) is not None


def with_params(inputs: tuple, params: torch.Tensor) -> tuple:
    return (*inputs[:6], params, *inputs[7:])


@needs_cxx
def test_cpu_kernel_builds() -> None:
    assert compiled_available()


@needs_cxx
@pytest.mark.parametrize("low", [True, False])
@pytest.mark.parametrize("taps", [1, 3, 5])
def test_compiled_forward_matches_composition(low: bool, taps: int) -> None:
    inputs = make_inputs(taps=taps, low=low)
    with op_impl("compiled"):
        fused = flowsep_synthesis(*inputs)
    torch.testing.assert_close(fused, flowsep_synthesis_reference(*inputs), rtol=0, atol=1e-12)


@needs_cxx
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("batch", "height", "width", "taps", "low"), [
    (1, 13, 45, 3, True),  # odd sizes: the head is not exactly half the frame
    (2, 10, 70, 3, True),  # exactly half, the network's case; 70 = 2 blocks of 32 lanes + 6
    (2, 7, 33, 5, False),  # a full-resolution head; one pixel past a block
    (1, 5, 3, 1, True),  # narrower than a block
])
def test_cpu_forward_matches_composition_at_the_borders(
    dtype: torch.dtype, t: float, batch: int, height: int, width: int, taps: int, low: bool,
) -> None:
    """The vectorised CPU forward against the composition: partial blocks of lanes, odd sizes,
    both head resolutions, the gates and prior weights of t = 0, 0.5, 1, and flows that send
    a third of the taps up to three frame sizes outside, so every clamp is taken."""
    from sepconv_cli.models.flowsep import gate

    inputs = make_inputs(batch, height, width, taps, low=low, dtype=dtype, seed=7)
    gen = torch.Generator().manual_seed(8)
    reach = 3 * max(height, width)
    flows = []
    for flow in inputs[3:5]:
        far = (torch.rand(flow.shape, generator=gen, dtype=dtype) < 1 / 3).to(dtype)
        flows.append(flow + far * (torch.rand(flow.shape, generator=gen, dtype=dtype) - 0.5) * 2 * reach)
    weight0 = inputs[5] if t == 0.5 else torch.full_like(inputs[5], 1 - t)  # 0 and 1: the log's clamps
    inputs = (*inputs[:3], *flows, weight0, inputs[6], gate(torch.full((batch,), t, dtype=dtype)), taps)
    extension = select_extension(KERNELS, torch.device("cpu"))
    assert extension is not None
    tolerance = {"rtol": 0, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(extension.forward(*inputs), flowsep_synthesis_reference(*inputs), **tolerance)


@needs_cxx
def test_float32_and_channels_last_params() -> None:
    inputs = make_inputs(dtype=torch.float32, height=16, width=32)
    params = inputs[6].contiguous(memory_format=torch.channels_last)
    with op_impl("compiled"):
        fused = flowsep_synthesis(*with_params(inputs, params))
    torch.testing.assert_close(fused, flowsep_synthesis_reference(*inputs), rtol=1e-5, atol=1e-5)


@needs_cxx
@pytest.mark.parametrize("low", [True, False])
def test_gradcheck_params(low: bool) -> None:
    inputs = make_inputs(batch=1, height=4, width=6, low=low)
    params = inputs[6].clone().requires_grad_()
    with op_impl("compiled"):
        assert torch.autograd.gradcheck(lambda p: flowsep_synthesis(*with_params(inputs, p)), (params,))


@needs_cxx
def test_backward_matches_autograd_of_composition() -> None:
    inputs = make_inputs(height=16, width=20, scale=1.0, seed=3)
    weights = torch.rand(2, 3, 16, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    grads = []
    for run in (flowsep_synthesis, flowsep_synthesis_reference):
        params = inputs[6].clone().requires_grad_()
        with op_impl("compiled"):
            (run(*with_params(inputs, params)) * weights).sum().backward()
        grads.append(params.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-11)


def test_frame_gradients_take_the_composition() -> None:
    """The compiled op differentiates w.r.t. params only; other gradients still arrive."""
    inputs = make_inputs()
    frame = inputs[0].clone().requires_grad_()
    flowsep_synthesis(frame, *inputs[1:]).sum().backward()
    assert frame.grad is not None and frame.grad.abs().sum() > 0


def test_readable_shape_error() -> None:
    inputs = make_inputs()
    with pytest.raises(ValueError, match=r"params must be \(B=2, 69, h, w\) for 3 taps"):
        flowsep_synthesis(*with_params(inputs, inputs[6][:, :68]))


def _photo_pair(height: int = 192, width: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Two frames of a real photograph, the second moved 3 px right, 2 px down and zoomed 2 %."""
    from skimage import data

    photo = torch.from_numpy(np.ascontiguousarray(data.astronaut())).permute(2, 0, 1).float().div(255)[None]
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0.98, 0, -6 / 512], [0, 0.98, -4 / 512]]])
    grid = torch.nn.functional.affine_grid(theta, (2, 3, height, width), align_corners=False)
    frames = torch.nn.functional.grid_sample(photo.expand(2, -1, -1, -1), grid, align_corners=False)
    frames = frames.mul(255).round().div(255)
    return frames[:1], frames[1:]


@needs_cxx
@pytest.mark.parametrize("t", [0.5, 0.1])
def test_shipped_weights_give_the_composition_s_frames(t: float) -> None:
    """The fused kernel keeps the shipped weights valid: within 1/255 of the old path on a photo pair."""
    torch.set_num_threads(1)
    engine = Interpolator(load_weights(WEIGHTS), device="cpu", op_impl="compiled")
    frame0, frame1 = _photo_pair()
    fused = engine.at(frame0, frame1, t)
    with reference_synthesis():
        composed = engine.at(frame0, frame1, t)
    assert (fused - composed).abs().max() < 1 / 255
    assert (fused - frame0).abs().mean() > 1e-3  # it did interpolate


def test_no_ext_environment_runs_the_composition() -> None:
    code = (
        "import torch\n"
        "from sepconv_cli.ext.flowsep_synthesis import _extension\n"
        "from sepconv_cli.models.registry import build_model\n"
        "assert _extension(torch.device('cpu')) is None\n"
        "model = build_model('flowsep', {'channels': [4, 8, 8, 8]}).eval()\n"
        "a = torch.rand(1, 3, 32, 32)\n"
        "with torch.no_grad():\n"
        "    out = model(a, a.roll(1, 3))\n"
        "assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()\n"
    )
    env = {"SEPCONV_NO_EXT": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=120)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    inputs = make_inputs(height=32, width=48, dtype=dtype, scale=1.0)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    results = []
    for device in ("cpu", "cuda"):
        moved = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)
        params = moved[6].clone().requires_grad_()
        with op_impl("compiled"):
            out = flowsep_synthesis(*with_params(moved, params))
            out.square().sum().backward()
        results.append((out.cpu(), params.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=tolerance, atol=tolerance)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gradcheck() -> None:
    inputs = tuple(t.cuda() if isinstance(t, torch.Tensor) else t for t in make_inputs(batch=1, height=4, width=6))
    params = inputs[6].clone().requires_grad_()
    with op_impl("compiled"):
        assert torch.autograd.gradcheck(lambda p: flowsep_synthesis(*with_params(inputs, p)), (params,))
