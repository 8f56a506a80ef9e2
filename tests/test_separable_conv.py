"""Tests of the local separable convolution op (sepconv_cli.ext.separable_conv)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sepconv_cli.ext import (
    OP_IMPLS,
    get_op_impl,
    op_impl,
    separable_conv,
    separable_conv_reference,
    set_op_impl,
)
from sepconv_cli.ext import _build
from sepconv_cli.ext.separable_conv import CPU_MAX_TAPS, KERNELS, Extension, select_extension
from tests.conftest import needs_cxx

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def make_inputs(batch, channels, height, width, k, dtype=torch.float64, device="cpu", seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    frame = torch.randn(batch, channels, height + k - 1, width + k - 1, generator=generator, dtype=dtype)
    vertical = torch.randn(batch, k, height, width, generator=generator, dtype=dtype)
    horizontal = torch.randn(batch, k, height, width, generator=generator, dtype=dtype)
    return tuple(t.to(device).requires_grad_(requires_grad) for t in (frame, vertical, horizontal))


def nested_loop_reference(frame, vertical, horizontal):
    """The definition, one scalar at a time, in float64 Python arithmetic."""
    f, v, h = (t.detach().double().tolist() for t in (frame, vertical, horizontal))
    batch, channels = frame.shape[:2]
    k, height, width = vertical.shape[1:]
    out = torch.zeros(batch, channels, height, width, dtype=torch.float64)
    for b, c, y, x in itertools.product(range(batch), range(channels), range(height), range(width)):
        out[b, c, y, x] = sum(
            v[b][i][y][x] * h[b][j][y][x] * f[b][c][y + i][x + j] for i in range(k) for j in range(k)
        )
    return out


def shifted_sum_reference(frame, vertical, horizontal):
    """Same definition as k*k shifted slices: differentiable by autograd, fast enough for tile-sized shapes."""
    k, height, width = vertical.shape[1:]
    out = 0
    for i, j in itertools.product(range(k), range(k)):
        out = out + vertical[:, i : i + 1] * horizontal[:, j : j + 1] * frame[:, :, i : i + height, j : j + width]
    return out


@pytest.mark.parametrize(
    "batch,channels,height,width,k",
    [(1, 1, 5, 7, 3), (2, 3, 5, 7, 5), (1, 2, 7, 5, 5), (1, 1, 1, 1, 3), (1, 1, 3, 4, 1)],
)
@pytest.mark.parametrize("fn", [separable_conv, separable_conv_reference], ids=["op", "reference"])
def test_matches_nested_loops(fn, batch, channels, height, width, k):
    inputs = make_inputs(batch, channels, height, width, k)
    torch.testing.assert_close(fn(*inputs), nested_loop_reference(*inputs), rtol=1e-12, atol=1e-12)


def test_shifted_sum_reference_matches_nested_loops():
    inputs = make_inputs(1, 2, 4, 6, 3)
    torch.testing.assert_close(shifted_sum_reference(*inputs), nested_loop_reference(*inputs))


# Shapes crossing the 64-row x 32-column tiles of the PyTorch path, with ragged edges.
# Each implementation is named: under "auto" a machine with a compiler would only ever
# test the compiled kernel and leave the PyTorch fall-back's tiling unchecked.
@pytest.mark.parametrize("impl", ["torch", pytest.param("compiled", marks=needs_cxx)])
@pytest.mark.parametrize("batch,channels,height,width,k", [(2, 3, 70, 75, 5), (1, 3, 9, 45, 51), (1, 4, 130, 33, 3)])
def test_forward_and_backward_across_tiles(impl, batch, channels, height, width, k):
    inputs = make_inputs(batch, channels, height, width, k, requires_grad=True)
    expected = shifted_sum_reference(*inputs)
    with op_impl(impl):
        actual = separable_conv(*inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, inputs, grad)
    with op_impl(impl):
        actual_grads = torch.autograd.grad(actual, inputs, grad)
    for name, a, e in zip(("frame", "vertical", "horizontal"), actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_gradcheck_all_inputs():
    inputs = make_inputs(2, 2, 4, 5, 3, requires_grad=True)
    assert torch.autograd.gradcheck(separable_conv, inputs)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, False, True)])
def test_gradcheck_subset_of_inputs(needs):
    inputs = make_inputs(1, 2, 3, 4, 3)
    for tensor, need in zip(inputs, needs):
        tensor.requires_grad_(need)
    assert torch.autograd.gradcheck(separable_conv, inputs)


@pytest.mark.parametrize("k,i0,j0", [(5, 0, 0), (5, 4, 4), (5, 1, 3), (5, 2, 2), (51, 50, 17)])
def test_delta_kernels_shift_exactly(k, i0, j0):
    height, width = 7, 40
    frame, _, _ = make_inputs(2, 3, height, width, k, dtype=torch.float32)
    vertical = torch.zeros(2, k, height, width)
    horizontal = torch.zeros(2, k, height, width)
    vertical[:, i0] = 1
    horizontal[:, j0] = 1
    out = separable_conv(frame, vertical, horizontal)
    assert torch.equal(out, frame[:, :, i0 : i0 + height, j0 : j0 + width])


def test_batch_samples_are_independent():
    frame, vertical, horizontal = make_inputs(3, 3, 6, 9, 5)
    together = separable_conv(frame, vertical, horizontal)
    for b in range(3):
        alone = separable_conv(frame[b : b + 1], vertical[b : b + 1], horizontal[b : b + 1])
        torch.testing.assert_close(together[b : b + 1], alone, rtol=0, atol=0)
    changed = frame.clone()
    changed[1] += 1
    changed_out = separable_conv(changed, vertical, horizontal)
    torch.testing.assert_close(changed_out[0], together[0], rtol=0, atol=0)
    torch.testing.assert_close(changed_out[2], together[2], rtol=0, atol=0)
    assert not torch.allclose(changed_out[1], together[1])


def test_non_contiguous_inputs_match_contiguous():
    frame, vertical, horizontal = make_inputs(2, 3, 6, 9, 5, dtype=torch.float32, requires_grad=True)
    # A transposed frame, kernels as a strided slice and a channels-last permutation.
    frame_t = frame.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    vertical_s = vertical.new_zeros(2, 5, 12, 9)
    vertical_s[:, :, 0::2] = vertical.detach()
    vertical_s = vertical_s[:, :, 0::2].requires_grad_()
    horizontal_p = horizontal.detach().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2).requires_grad_()
    assert not (frame_t.is_contiguous() or vertical_s.is_contiguous() or horizontal_p.is_contiguous())

    expected = separable_conv(frame, vertical, horizontal)
    actual = separable_conv(frame_t, vertical_s, horizontal_p)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)

    grad = torch.randn(9, 6, 3, 2).permute(3, 2, 1, 0)  # non-contiguous grad_out
    expected_grads = torch.autograd.grad(expected, (frame, vertical, horizontal), grad)
    actual_grads = torch.autograd.grad(actual, (frame_t, vertical_s, horizontal_p), grad)
    for a, e in zip(actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_empty_batch():
    inputs = make_inputs(0, 3, 4, 6, 5, dtype=torch.float32, requires_grad=True)
    out = separable_conv(*inputs)
    assert out.shape == (0, 3, 4, 6) and out.dtype == torch.float32
    grads = torch.autograd.grad(out.sum(), inputs)
    assert [g.shape for g in grads] == [t.shape for t in inputs]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_in_float32(dtype):
    frame, vertical, horizontal = make_inputs(1, 3, 8, 10, 51, dtype=torch.float32)
    # Kernels that sum to one, as SepConv's do: output values stay near the frame's.
    vertical, horizontal = vertical.softmax(1), horizontal.softmax(1)
    low = [t.to(dtype) for t in (frame, vertical, horizontal)]
    with torch.autocast("cpu", dtype=dtype):
        out = separable_conv(*low)
    assert out.dtype == torch.float32
    # Exactly the float32 computation on the rounded inputs...
    torch.testing.assert_close(out, separable_conv(*(t.float() for t in low)), rtol=1e-6, atol=1e-6)
    # ...and close to float32 on the original ones (only the input rounding differs).
    torch.testing.assert_close(out, separable_conv(frame, vertical, horizontal), rtol=0, atol=0.05)


def test_autocast_mixed_dtypes_and_backward():
    frame, vertical, horizontal = make_inputs(1, 3, 5, 6, 5, dtype=torch.float32)
    vertical = vertical.to(torch.bfloat16).requires_grad_()
    horizontal = horizontal.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = separable_conv(frame, vertical, horizontal)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    assert vertical.grad.dtype == torch.bfloat16 and torch.isfinite(vertical.grad.float()).all()
    assert horizontal.grad.dtype == torch.bfloat16 and torch.isfinite(horizontal.grad.float()).all()


def test_half_inputs_without_autocast():
    inputs = make_inputs(1, 2, 5, 6, 3, dtype=torch.float32)
    out = separable_conv(*(t.to(torch.bfloat16) for t in inputs))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), separable_conv(*inputs), rtol=0.05, atol=0.1)


def _shapes(frame=(1, 3, 8, 10), vertical=(1, 3, 6, 8), horizontal=(1, 3, 6, 8)):
    return torch.zeros(frame), torch.zeros(vertical), torch.zeros(horizontal)


@pytest.mark.parametrize(
    "inputs,message",
    [
        (_shapes(frame=(3, 8, 10)), r"frame must be 4-D \(B, C, H\+k-1, W\+k-1\), got shape \(3, 8, 10\)"),
        (_shapes(vertical=(3, 6, 8)), r"vertical must be 4-D \(B, k, H, W\)"),
        (_shapes(horizontal=(1, 1, 3, 6, 8)), r"horizontal must be 4-D"),
        (_shapes(horizontal=(1, 5, 6, 8)), r"vertical has k=3 taps but horizontal has k=5"),
        (_shapes(horizontal=(1, 3, 6, 9)), r"same shape \(B, k, H, W\), got \(1, 3, 6, 8\) and \(1, 3, 6, 9\)"),
        (_shapes(frame=(2, 3, 8, 10)), r"frame has batch size 2 but the kernels have 1"),
        (_shapes(frame=(1, 3, 6, 8)), r"padded frame must be 8x10 \(H\+k-1, W\+k-1\), got 6x8"),
        (_shapes(vertical=(1, 0, 6, 8), horizontal=(1, 0, 6, 8)), r"at least one tap"),
    ],
)
def test_shape_errors(inputs, message):
    with pytest.raises(ValueError, match=message):
        separable_conv(*inputs)
    with pytest.raises(ValueError, match=message):
        separable_conv_reference(*inputs)


def test_dtype_and_device_errors():
    frame, vertical, horizontal = _shapes()
    with pytest.raises(ValueError, match=r"share a dtype, got torch.float32, torch.float64, torch.float32"):
        separable_conv(frame, vertical.double(), horizontal)
    with pytest.raises(ValueError, match=r"floating point"):
        separable_conv(frame.long(), vertical, horizontal)
    with pytest.raises(ValueError, match=r"one device, got meta, cpu and cpu"):
        separable_conv(frame.to("meta"), vertical, horizontal)


def test_op_impl_setting():
    assert OP_IMPLS == ("auto", "compiled", "torch")
    assert get_op_impl() == "auto"
    with op_impl("torch"):
        assert get_op_impl() == "torch"
        with op_impl("compiled"):
            assert get_op_impl() == "compiled"
        assert get_op_impl() == "torch"
    assert get_op_impl() == "auto"
    with pytest.raises(ValueError, match="unknown op implementation 'triton'"):
        set_op_impl("triton")
    with pytest.raises(RuntimeError), op_impl("torch"):
        raise RuntimeError("the previous setting must come back after an exception")
    assert get_op_impl() == "auto"


@pytest.mark.skipif(HAS_CUDA, reason="checks the error raised where no GPU exists")
def test_forced_compiled_without_extension_raises():
    cuda = torch.device("cuda")
    missing = {"cuda": Extension("sepconv_missing_extension", ())}
    assert select_extension(missing, cuda) is None
    with op_impl("compiled"), pytest.raises(RuntimeError, match="compiled implementation was requested"):
        select_extension(missing, cuda)
    with op_impl("torch"):
        assert select_extension(missing, cuda) is None
    # A device with no kernel at all (meta, mps, ...) is the same case.
    with op_impl("compiled"), pytest.raises(RuntimeError, match="no compiled kernel for meta"):
        select_extension(KERNELS, torch.device("meta"))


# ----------------------------------------------------------------- compiled CPU kernel


@needs_cxx
def test_cpu_kernel_builds():
    assert select_extension(KERNELS, torch.device("cpu")) is not None


@needs_cxx
@pytest.mark.parametrize("k", [1, 2, 3, 8, 9, 16, 17, 51, CPU_MAX_TAPS])
def test_cpu_kernel_matches_reference_float64(k):
    # Widths below and across the kernel's 16-pixel blocks, every tap count it compiles.
    inputs = make_inputs(2, 3, 3, 37, k, seed=k)
    with op_impl("compiled"):
        out = separable_conv(*inputs)
    expected = nested_loop_reference(*inputs) if k <= 3 else shifted_sum_reference(*inputs)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())


@needs_cxx
@pytest.mark.parametrize("k", [5, 51])
def test_cpu_kernel_float32_close_to_float64(k):
    inputs = make_inputs(1, 3, 9, 21, k, dtype=torch.float32, seed=1)
    with op_impl("compiled"):
        out = separable_conv(*inputs)
    expected = shifted_sum_reference(*(t.double() for t in inputs))
    # k*k products of unit-variance values: the float32 rounding grows with k.
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-6 * k * k)


@needs_cxx
def test_cpu_kernel_reads_any_layout_and_threads_agree():
    frame, vertical, horizontal = make_inputs(2, 3, 11, 40, 51, dtype=torch.float32, seed=2)
    with op_impl("compiled"):
        expected = separable_conv(frame, vertical, horizontal)
        layouts = [
            # The network's CPU layout: channels_last kernels and frame.
            tuple(t.contiguous(memory_format=torch.channels_last) for t in (frame, vertical, horizontal)),
            # Mixed layouts, a strided slice of a larger frame.
            (
                torch.nn.functional.pad(frame, (3, 0, 0, 2))[:, :, :-2, 3:],
                vertical.contiguous(memory_format=torch.channels_last),
                horizontal.transpose(2, 3).contiguous().transpose(2, 3),
            ),
        ]
        # The compiler may vectorise the taps' gather differently per stride, so equal up
        # to float32 rounding rather than bit for bit.
        for inputs in layouts:
            torch.testing.assert_close(separable_conv(*inputs), expected, rtol=1e-6, atol=1e-4)
        # Stride-0 kernels broadcast over the batch.
        shared = separable_conv(frame, vertical[:1].expand(2, -1, -1, -1), horizontal[:1].expand(2, -1, -1, -1))
        torch.testing.assert_close(shared[:1], expected[:1], rtol=1e-6, atol=1e-4)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            assert torch.equal(separable_conv(frame, vertical, horizontal), expected)
        finally:
            torch.set_num_threads(threads)


@needs_cxx
def test_cpu_kernel_empty_and_half_inputs():
    with op_impl("compiled"):
        assert separable_conv(*make_inputs(0, 3, 4, 6, 5, dtype=torch.float32)).shape == (0, 3, 4, 6)
        assert separable_conv(*make_inputs(1, 3, 0, 6, 5, dtype=torch.float32)).shape == (1, 3, 0, 6)
        inputs = make_inputs(1, 2, 5, 6, 3, dtype=torch.float32)
        out = separable_conv(*(t.to(torch.float16) for t in inputs))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), separable_conv_reference(*inputs), rtol=0.01, atol=0.05)


def test_long_kernels_take_the_pytorch_path_on_cpu():
    inputs = make_inputs(1, 1, 2, 3, CPU_MAX_TAPS + 1, dtype=torch.float32)
    expected = separable_conv_reference(*inputs)
    torch.testing.assert_close(separable_conv(*inputs), expected)
    with op_impl("compiled"), pytest.raises(RuntimeError, match=f"at most {CPU_MAX_TAPS} taps, got 65"):
        separable_conv(*inputs)


def test_every_setting_gives_the_same_result_on_cpu(monkeypatch: pytest.MonkeyPatch):
    inputs = make_inputs(1, 2, 4, 5, 3)
    expected = nested_loop_reference(*inputs)
    for name in ("auto", "torch"):
        with op_impl(name):
            torch.testing.assert_close(separable_conv(*inputs), expected)
    # Opting out of compiled kernels: auto falls back quietly, compiled refuses.
    monkeypatch.setattr(_build, "_loaded", {})
    monkeypatch.setenv("SEPCONV_NO_EXT", "1")
    torch.testing.assert_close(separable_conv(*inputs), expected)
    with op_impl("compiled"), pytest.raises(RuntimeError, match="no compiled kernel for cpu tensors"):
        separable_conv(*inputs)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile(backend):
    torch._dynamo.reset()

    def fn(frame, vertical, horizontal):
        return separable_conv(frame * 2, vertical, horizontal.tanh()).square().mean()

    inputs = make_inputs(2, 3, 6, 9, 5, dtype=torch.float32, requires_grad=True)
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    expected = fn(*inputs)
    actual = compiled(*inputs)
    torch.testing.assert_close(actual, expected)
    for a, e in zip(torch.autograd.grad(actual, inputs), torch.autograd.grad(expected, inputs)):
        torch.testing.assert_close(a, e)


@pytest.mark.slow
def test_torch_compile_inductor():
    # About 20 s with a cold compile cache on 2 cores, 4 s warm.
    torch._dynamo.reset()

    def fn(frame, vertical, horizontal):
        return separable_conv(frame * 2, vertical, horizontal.tanh()).square().mean()

    inputs = make_inputs(2, 3, 6, 9, 5, dtype=torch.float32, requires_grad=True)
    compiled = torch.compile(fn, backend="inductor", fullgraph=True)
    actual = compiled(*inputs)
    expected = fn(*inputs)
    torch.testing.assert_close(actual, expected)
    for a, e in zip(torch.autograd.grad(actual, inputs), torch.autograd.grad(expected, inputs)):
        torch.testing.assert_close(a, e)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        frame, vertical, horizontal = make_inputs(2, 3, 6, 9, 5, dtype=torch.float32)
        out = torch.ops.sepconv.separable_conv(frame, vertical, horizontal)
        grads = torch.ops.sepconv.separable_conv_backward(out, frame, vertical, horizontal, [True, True, True])
    assert out.shape == (2, 3, 6, 9)
    assert [g.shape for g in grads] == [frame.shape, vertical.shape, horizontal.shape]


def test_custom_op_schemas():
    torch.library.opcheck(
        torch.ops.sepconv.separable_conv.default,
        make_inputs(1, 2, 3, 4, 3, dtype=torch.float32, requires_grad=True),
    )


# --------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_cuda_matches_cpu(dtype, tolerance):
    cpu = make_inputs(2, 3, 37, 45, 51, dtype=dtype, requires_grad=True)
    gpu = tuple(t.detach().cuda().requires_grad_() for t in cpu)
    with op_impl("compiled"):
        out_gpu = separable_conv(*gpu)
    out_cpu = separable_conv(*cpu)
    scale = out_cpu.abs().max().item()
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=tolerance, atol=tolerance * scale)
    grad = torch.randn_like(out_cpu)
    with op_impl("compiled"):
        grads_gpu = torch.autograd.grad(out_gpu, gpu, grad.cuda())
    grads_cpu = torch.autograd.grad(out_cpu, cpu, grad)
    for name, g, c in zip(("frame", "vertical", "horizontal"), grads_gpu, grads_cpu):
        scale = c.abs().max().item()
        torch.testing.assert_close(
            g.cpu(), c, rtol=tolerance, atol=tolerance * scale, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.cuda
@needs_cuda
def test_cuda_gradcheck():
    inputs = make_inputs(2, 5, 4, 5, 3, device="cuda", requires_grad=True)
    with op_impl("compiled"):
        assert torch.autograd.gradcheck(separable_conv, inputs)


@pytest.mark.cuda
@needs_cuda
def test_cuda_forced_kernel_and_torch_path_agree():
    with op_impl("compiled"):
        assert select_extension(KERNELS, torch.device("cuda")) is not None
    inputs = make_inputs(1, 3, 20, 70, 5, dtype=torch.float32, device="cuda")
    with op_impl("compiled"):
        kernel = separable_conv(*inputs)
    with op_impl("torch"):
        reference = separable_conv(*inputs)
    torch.testing.assert_close(kernel, reference)


@pytest.mark.cuda
@needs_cuda
def test_cuda_autocast_and_empty():
    inputs = make_inputs(1, 3, 8, 10, 51, dtype=torch.float32, device="cuda")
    with op_impl("compiled"), torch.autocast("cuda", dtype=torch.float16):
        out = separable_conv(*(t.half() for t in inputs))
    assert out.dtype == torch.float32
    with op_impl("compiled"):
        empty = separable_conv(*make_inputs(0, 3, 4, 6, 5, dtype=torch.float32, device="cuda"))
    assert empty.shape == (0, 3, 4, 6)
