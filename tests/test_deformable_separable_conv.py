"""Deformable separable convolution (DSepConv synthesis): values, gradients, special cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sepconv_cli.ext.deformable_separable_conv import (
    KERNELS,
    deformable_separable_conv,
    deformable_separable_conv_reference,
)
from sepconv_cli.ext.separable_conv import op_impl, select_extension
from tests.conftest import needs_cxx

def make_inputs(
    batch: int = 2,
    channels: int = 2,
    height: int = 4,
    width: int = 5,
    taps: int = 3,
    *,
    max_offset: int = 3,
    fractional: bool = True,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random inputs; offsets reach ``max_offset`` px, i.e. well outside a tiny frame.

    With ``fractional`` every offset is an integer plus a fraction in [0.2, 0.8], so no
    sample position is on a grid line (bilinear sampling has kinks there).
    """
    gen = torch.Generator().manual_seed(seed)
    taps2 = taps * taps

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=dtype)

    frame = rand(batch, channels, height, width)
    vertical = rand(batch, taps, height, width) * 2 - 0.5
    horizontal = rand(batch, taps, height, width) * 2 - 0.5
    shape = (batch, taps2, height, width)
    whole_y = torch.randint(-max_offset, max_offset + 1, shape, generator=gen).to(dtype)
    whole_x = torch.randint(-max_offset, max_offset + 1, shape, generator=gen).to(dtype)
    if fractional:
        offset_y = whole_y + 0.2 + 0.6 * rand(*shape)
        offset_x = whole_x + 0.2 + 0.6 * rand(*shape)
    else:
        offset_y = whole_y + (rand(*shape) - 0.5)
        offset_x = whole_x + (rand(*shape) - 0.5)
    mask = rand(*shape)
    return frame, vertical, horizontal, offset_y, offset_x, mask


def nested_loop(frame, vertical, horizontal, offset_y, offset_x, mask) -> torch.Tensor:  # noqa: ANN001
    """The definition, literally, in Python floats."""
    batch, channels, height, width = frame.shape
    taps = vertical.shape[1]
    radius = taps // 2
    f, v, h = frame.tolist(), vertical.tolist(), horizontal.tolist()
    dy, dx, m = offset_y.tolist(), offset_x.tolist(), mask.tolist()

    def bilinear(image: list[list[float]], py: float, px: float) -> float:
        py = min(max(py, 0.0), height - 1.0)
        px = min(max(px, 0.0), width - 1.0)
        y0, x0 = math.floor(py), math.floor(px)
        y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
        fy, fx = py - y0, px - x0
        return (
            (1 - fy) * (1 - fx) * image[y0][x0]
            + (1 - fy) * fx * image[y0][x1]
            + fy * (1 - fx) * image[y1][x0]
            + fy * fx * image[y1][x1]
        )

    out = torch.zeros(batch, channels, height, width, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            for y in range(height):
                for x in range(width):
                    total = 0.0
                    for i in range(taps):
                        for j in range(taps):
                            k = i * taps + j
                            weight = v[b][i][y][x] * h[b][j][y][x] * m[b][k][y][x]
                            py = y + i - radius + dy[b][k][y][x]
                            px = x + j - radius + dx[b][k][y][x]
                            total += weight * bilinear(f[b][c], py, px)
                    out[b, c, y, x] = total
    return out


def separable_conv_replicate(frame, vertical, horizontal) -> torch.Tensor:  # noqa: ANN001
    """SepConv's synthesis on a replicate-padded frame: the project's op when it exists."""
    radius = vertical.shape[1] // 2
    padded = F.pad(frame, (radius,) * 4, mode="replicate")
    try:
        from sepconv_cli.ext.separable_conv import separable_conv
    except ImportError:
        separable_conv = None
    if separable_conv is not None:
        return separable_conv(padded, vertical, horizontal)
    height, width = frame.shape[-2:]
    out = torch.zeros_like(frame)
    for i in range(vertical.shape[1]):
        for j in range(horizontal.shape[1]):
            weight = (vertical[:, i] * horizontal[:, j]).unsqueeze(1)
            out = out + weight * padded[:, :, i : i + height, j : j + width]
    return out


def grads(output: torch.Tensor, inputs: tuple[torch.Tensor, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed), dtype=output.dtype)
    return torch.autograd.grad(output, inputs, weights.to(output.device))


def requiring_grad(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.detach().clone().requires_grad_(True) for t in inputs)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("taps", [3, 5])
@pytest.mark.parametrize("fractional", [True, False])
def test_matches_nested_loop_definition(taps: int, fractional: bool) -> None:
    inputs = make_inputs(taps=taps, max_offset=4, fractional=fractional, seed=taps)
    expected = nested_loop(*inputs)
    # Offsets reach past every border of the 4x5 frame: the clamp is exercised.
    assert (inputs[3] + 4 < 0).any() or (inputs[3] > 3).any()
    torch.testing.assert_close(deformable_separable_conv(*inputs), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(deformable_separable_conv_reference(*inputs), expected, rtol=1e-12, atol=1e-12)


def test_float32_matches_float64() -> None:
    inputs = make_inputs(taps=5, seed=3)
    expected = deformable_separable_conv(*inputs)
    result = deformable_separable_conv(*(t.float() for t in inputs))
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-5)


def test_zero_offsets_unit_mask_is_separable_conv_with_replicate_padding() -> None:
    frame, vertical, horizontal, offset_y, offset_x, mask = make_inputs(taps=5, height=6, width=7, seed=4)
    offset_y, offset_x, mask = torch.zeros_like(offset_y), torch.zeros_like(offset_x), torch.ones_like(mask)
    frame, vertical, horizontal = requiring_grad((frame, vertical, horizontal))
    result = deformable_separable_conv(frame, vertical, horizontal, offset_y, offset_x, mask)
    expected = separable_conv_replicate(frame, vertical, horizontal)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads(result, (frame, vertical, horizontal)), grads(expected, (frame, vertical, horizontal))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_single_tap_is_grid_sample_border_warp() -> None:
    inputs = make_inputs(batch=2, channels=3, height=5, width=6, taps=1, max_offset=7, seed=5)
    # A few positions exactly on the border lines, where both clamp and pass no gradient.
    inputs[3][0, 0, 2, 3], inputs[4][1, 0, 4, 1], inputs[3][1, 0, 1, 1] = -2.0, 4.0, 3.0
    frame, vertical, horizontal, offset_y, offset_x, mask = requiring_grad(inputs)
    result = deformable_separable_conv(frame, vertical, horizontal, offset_y, offset_x, mask)

    height, width = frame.shape[-2:]
    rows = torch.arange(height, dtype=frame.dtype).view(1, height, 1)
    cols = torch.arange(width, dtype=frame.dtype).view(1, 1, width)
    grid = torch.stack(
        [2 * (cols + offset_x[:, 0]) / (width - 1) - 1, 2 * (rows + offset_y[:, 0]) / (height - 1) - 1], dim=-1
    )
    warped = F.grid_sample(frame, grid, mode="bilinear", padding_mode="border", align_corners=True)
    expected = (vertical * horizontal * mask) * warped
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)
    # Same gradients too, including grid_sample's zero offset gradient outside the frame.
    everything = (frame, vertical, horizontal, offset_y, offset_x, mask)
    for got, want in zip(grads(result, everything), grads(expected, everything)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tap", [(0, 0), (1, 2), (2, 1)])
def test_integer_offsets_are_exact_shifts(tap: tuple[int, int]) -> None:
    """One tap selected (one-hot v and h), integer per-pixel offsets: a pure index shift."""
    batch, channels, height, width, taps = 2, 3, 6, 7, 3
    frame, vertical, horizontal, offset_y, offset_x, mask = make_inputs(
        batch, channels, height, width, taps, dtype=torch.float32, seed=6
    )
    i, j = tap
    vertical, horizontal = torch.zeros_like(vertical), torch.zeros_like(horizontal)
    vertical[:, i], horizontal[:, j] = 1.0, 1.0
    offset_y, offset_x, mask = offset_y.floor(), offset_x.floor(), torch.ones_like(mask)
    result = deformable_separable_conv(frame, vertical, horizontal, offset_y, offset_x, mask)

    k = i * taps + j
    rows = torch.arange(height).view(1, height, 1) + (i - 1) + offset_y[:, k].long()
    cols = torch.arange(width).view(1, 1, width) + (j - 1) + offset_x[:, k].long()
    flat = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).view(batch, 1, -1)
    expected = frame.flatten(2).gather(2, flat.expand(-1, channels, -1)).view_as(frame)
    assert torch.equal(result, expected)


def test_batch_and_non_contiguous_inputs() -> None:
    inputs = make_inputs(batch=3, channels=3, height=5, width=6, taps=3, seed=7)
    expected = deformable_separable_conv(*inputs)
    # Same values in transposed storage, and a strided view of a larger tensor.
    scrambled = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in inputs]
    scrambled[0] = torch.stack([inputs[0], torch.zeros_like(inputs[0])], dim=-1)[..., 0]
    assert not any(t.is_contiguous() for t in scrambled)
    torch.testing.assert_close(deformable_separable_conv(*scrambled), expected, rtol=0, atol=1e-15)
    for b in range(3):
        single = deformable_separable_conv(*(t[b : b + 1] for t in inputs))
        torch.testing.assert_close(single, expected[b : b + 1], rtol=0, atol=1e-15)
    # Backward with non-contiguous inputs and gradient.
    leaves = requiring_grad(inputs)
    scrambled_leaves = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in leaves]
    result = deformable_separable_conv(*scrambled_leaves)
    upstream = torch.randn(3, 3, 6, 5, dtype=torch.float64).transpose(2, 3)
    got = torch.autograd.grad(result, leaves, upstream)
    want = torch.autograd.grad(deformable_separable_conv_reference(*leaves), leaves, upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_non_finite_offset_poisons_only_its_pixel() -> None:
    frame, vertical, horizontal, offset_y, offset_x, mask = make_inputs(taps=3, seed=8)
    offset_y[0, 4, 1, 2] = float("nan")
    offset_x[1, 0, 0, 0] = float("inf")
    offset_x[1, 1, 3, 3] = -float("inf")
    result = deformable_separable_conv(frame, vertical, horizontal, offset_y, offset_x, mask)
    nan = torch.zeros_like(result, dtype=torch.bool)
    nan[0, :, 1, 2] = True
    assert torch.equal(result.isnan(), nan)  # infinities are clamped to the border


@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (1, 0, 4, 5), (1, 3, 0, 5), (1, 3, 1, 1)])
def test_empty_and_single_pixel_frames(shape: tuple[int, int, int, int]) -> None:
    batch, channels, height, width = shape
    inputs = requiring_grad(make_inputs(batch, channels, height, width, taps=3))
    result = deformable_separable_conv(*inputs)
    assert result.shape == shape
    result.sum().backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in inputs)
    if result.numel():  # a 1x1 frame: every tap reads its only pixel
        weight = (inputs[1][:, :, None] * inputs[2][:, None] * inputs[5].view(1, 3, 3, 1, 1)).sum((1, 2))
        torch.testing.assert_close(result, weight * inputs[0])


# --------------------------------------------------------------------------- compiled CPU kernel


@needs_cxx
def test_cpu_kernel_builds() -> None:
    assert select_extension(KERNELS, torch.device("cpu")) is not None


@needs_cxx
@pytest.mark.parametrize("taps", [1, 3, 5, 7])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_cpu_kernel_matches_pytorch_path(taps: int, dtype: torch.dtype, tolerance: float) -> None:
    inputs = make_inputs(2, 3, 9, 23, taps, max_offset=6, fractional=False, dtype=dtype, seed=taps)
    with op_impl("torch"):
        expected = deformable_separable_conv(*inputs)
    with op_impl("compiled"):
        result = deformable_separable_conv(*inputs)
        # The network's CPU layout: every input channels_last.
        channels_last = deformable_separable_conv(*(t.contiguous(memory_format=torch.channels_last) for t in inputs))
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one_thread = deformable_separable_conv(*inputs)
        finally:
            torch.set_num_threads(threads)
    torch.testing.assert_close(result, expected, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(channels_last, expected, rtol=tolerance, atol=tolerance)
    assert torch.equal(one_thread, result)


@needs_cxx
def test_cpu_kernel_half_inputs_are_computed_in_float32() -> None:
    inputs = make_inputs(1, 3, 5, 6, 3, dtype=torch.float32, seed=9)
    with op_impl("compiled"):
        result = deformable_separable_conv(*(t.to(torch.bfloat16) for t in inputs))
    assert result.dtype == torch.bfloat16
    torch.testing.assert_close(result.float(), deformable_separable_conv_reference(*inputs), rtol=0.02, atol=0.05)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("taps", [1, 3, 5])
def test_gradcheck_all_inputs(taps: int) -> None:
    inputs = requiring_grad(make_inputs(batch=2, channels=2, height=3, width=4, taps=taps, seed=10 + taps))
    # Full Jacobians for n <= 3; n = 5 has 25 taps per evaluation, so it checks random projections.
    assert torch.autograd.gradcheck(
        deformable_separable_conv, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=taps > 3
    )


def test_gradcheck_without_frame_gradient() -> None:
    frame, *rest = make_inputs(batch=1, channels=2, height=3, width=4, taps=3, seed=20)
    rest = requiring_grad(tuple(rest))
    assert torch.autograd.gradcheck(
        lambda *params: deformable_separable_conv(frame, *params), rest, eps=1e-6, atol=1e-7, rtol=1e-5
    )


def test_backward_matches_autograd_of_reference_on_borders_and_grid_lines() -> None:
    # Offsets include integers and positions on and beyond the borders: the conventions
    # (one-sided derivative on grid lines, no offset gradient where clamped) must agree.
    frame, vertical, horizontal, offset_y, offset_x, mask = make_inputs(taps=5, height=5, width=6, seed=21)
    offset_y[:, ::3] = offset_y[:, ::3].round()
    offset_x[:, ::2] = offset_x[:, ::2].round()
    offset_y[:, 1, 0, 0] = 2.0  # tap (0, 1) of pixel (0, 0): y = 0 - 2 + 2, on the top border line
    offset_y[:, 1, 1, 0] = 2.0  # the same tap one row down: y = 1, an interior grid line
    offset_x[:, 3, 2, 5] = -1.0  # tap (0, 3) of pixel (2, 5): x = 5 + 1 - 1 = W - 1, on the right border
    leaves = requiring_grad((frame, vertical, horizontal, offset_y, offset_x, mask))
    got = grads(deformable_separable_conv(*leaves), leaves)
    want = grads(deformable_separable_conv_reference(*leaves), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    # Documented convention: no offset gradient on the border line (like grid_sample).
    assert got[3][:, 1, 0, 0].eq(0).all() and got[4][:, 3, 2, 5].eq(0).all()
    assert got[3][:, 1, 1, 0].ne(0).all()  # one row down it passes: f[2] - f[1]


def test_offset_gradient_is_zero_where_clamped() -> None:
    frame, vertical, horizontal, offset_y, offset_x, mask = requiring_grad(make_inputs(taps=3, seed=22))
    result = deformable_separable_conv(frame, vertical, horizontal, offset_y, offset_x, mask)
    grad_y, grad_x = grads(result, (offset_y, offset_x))
    tap_i = torch.arange(3).repeat_interleave(3).view(1, 9, 1, 1)  # k = i * 3 + j
    tap_j = torch.arange(3).repeat(3).view(1, 9, 1, 1)
    rows = torch.arange(4, dtype=torch.float64).view(1, 1, 4, 1) + tap_i - 1
    cols = torch.arange(5, dtype=torch.float64).view(1, 1, 1, 5) + tap_j - 1
    outside_y = ((rows + offset_y) < 0) | ((rows + offset_y) > 3)
    outside_x = ((cols + offset_x) < 0) | ((cols + offset_x) > 4)
    assert outside_y.any() and (~outside_y).any()
    assert grad_y[outside_y].eq(0).all() and grad_x[outside_x].eq(0).all()
    assert grad_y[~outside_y].ne(0).all() and grad_x[~outside_x].ne(0).all()


# --------------------------------------------------------------------------- op plumbing


def test_opcheck() -> None:
    inputs = requiring_grad(make_inputs(batch=1, channels=2, height=3, width=4, taps=3, seed=30))
    torch.library.opcheck(
        torch.ops.sepconv.deformable_separable_conv.default,
        inputs,
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


def test_autocast_runs_in_float32() -> None:
    inputs = make_inputs(taps=3, dtype=torch.float32, seed=31)
    expected = deformable_separable_conv(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = deformable_separable_conv(*(t.bfloat16() for t in inputs))
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "frame": a["frame"][0]}, "frame must have 4 dimensions"),
        (lambda a: {**a, "vertical": a["vertical"][:, :2], "horizontal": a["horizontal"][:, :2]}, "odd number"),
        (lambda a: {**a, "horizontal": a["horizontal"][:, :1]}, "horizontal must have shape"),
        (lambda a: {**a, "offset_x": a["offset_x"][:, :4]}, "offset_x must have shape"),
        (lambda a: {**a, "mask": a["mask"][..., :3]}, "mask must have shape"),
        (lambda a: {**a, "offset_y": a["offset_y"].float()}, "offset_y is torch.float32"),
        (lambda a: {**a, "frame": a["frame"].long()}, "floating-point"),
    ],
)
def test_readable_shape_errors(change, message: str) -> None:  # noqa: ANN001
    names = ["frame", "vertical", "horizontal", "offset_y", "offset_x", "mask"]
    arguments = change(dict(zip(names, make_inputs(taps=3))))
    with pytest.raises(ValueError, match=message):
        deformable_separable_conv(**arguments)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("taps", [1, 3, 5])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(taps: int, dtype: torch.dtype) -> None:
    inputs = make_inputs(batch=2, channels=5, height=9, width=11, taps=taps, fractional=False, dtype=dtype, seed=40)
    cpu_leaves = requiring_grad(inputs)
    cuda_leaves = requiring_grad(tuple(t.cuda() for t in inputs))
    cpu_out = deformable_separable_conv(*cpu_leaves)
    with op_impl("compiled"):  # raises rather than silently testing the PyTorch path
        cuda_out = deformable_separable_conv(*cuda_leaves)
        cuda_grads = grads(cuda_out, cuda_leaves)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(cuda_out.cpu(), cpu_out, **tolerance)
    for got, want in zip(cuda_grads, grads(cpu_out, cpu_leaves)):
        torch.testing.assert_close(got.cpu(), want, **tolerance)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gradcheck() -> None:
    inputs = requiring_grad(tuple(t.cuda() for t in make_inputs(batch=2, channels=2, height=3, width=4, taps=3)))
    with op_impl("compiled"):
        assert torch.autograd.gradcheck(deformable_separable_conv, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_half_input_and_autocast() -> None:
    inputs = make_inputs(batch=1, channels=3, height=8, width=9, taps=5, dtype=torch.float32, seed=41)
    inputs = tuple(t.half().float() for t in inputs)  # the same values in every precision
    cuda = tuple(t.cuda() for t in inputs)
    expected = deformable_separable_conv(*inputs)
    with op_impl("compiled"):
        half = deformable_separable_conv(*(t.half() for t in cuda))
        with torch.autocast("cuda", dtype=torch.float16):
            autocast = deformable_separable_conv(*(t.half() for t in cuda))
    assert half.dtype == torch.float16 and autocast.dtype == torch.float32
    torch.testing.assert_close(half.float().cpu(), expected, rtol=2e-3, atol=2e-3)  # kernel in float32
    torch.testing.assert_close(autocast.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_mixed_precision_under_autocast_matches_float32() -> None:
    # The DSepConv network's heads emit bf16 under autocast while the frame stays fp32.
    torch.manual_seed(3)
    frame = torch.rand(1, 3, 9, 11)
    v, h = torch.rand(1, 3, 9, 11), torch.rand(1, 3, 9, 11)
    dy, dx, mask = torch.randn(1, 9, 9, 11), torch.randn(1, 9, 9, 11), torch.rand(1, 9, 9, 11)
    expected = deformable_separable_conv(frame, v, h, dy, dx, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = deformable_separable_conv(frame, *(t.bfloat16() for t in (v, h, dy, dx, mask)))
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, expected, atol=0.05, rtol=0.05)
