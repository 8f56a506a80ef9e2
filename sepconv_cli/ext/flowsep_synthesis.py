"""FlowSep's synthesis: from the network's low-resolution head to the output frame, in one op.

For every output pixel (the definition is ``flowsep_synthesis_reference``, the PyTorch
composition FlowSep has always run, and which the compiled kernels must match)::

    r      = gate · upsample_bilinear(params)            (align_corners=False, to H × W)
    C_f    = dsc(frame_f; centre + r_v, centre + r_h, 2·sigmoid(r_m), flow_f + r_o) / Σ v·h·m
             (the sum is replaced by 1 where |Σ| < 0.01)          for f = 0, 1
    logits = (log w0, log(1 - w0), log 1e-3) + r_l               (w0 clamped to [1e-6, 1 - 1e-6])
    out    = softmax(logits) · (C_0, C_1, splat)

with ``dsc`` the deformable separable convolution of ``sepconv_cli.ext.deformable_separable_conv``
(its border conventions). ``params`` holds, per frame, k = 2n + 3n² channels — the vertical
and horizontal kernel residuals (n each), the tap offsets dy then dx (n² each) and the mask
logits (n²) — then the 3 blend-logit residuals: P = 2k + 3 channels, 69 for n = 3.

Shapes: ``frame0``, ``frame1``, ``splat`` (B, 3, H, W); ``flow0``, ``flow1`` (B, 2, H, W)
(dx, dy from time t to each frame, px); ``weight0`` (B, 1, H, W) in [0, 1]; ``params``
(B, P, h, w) at any resolution (FlowSep's U-Net gives h = H/2, w = W/2; h = H, w = W is
the identity); ``gate`` (B,). Returns (B, 3, H, W).

Why fused: the composition materialises the 69-channel head at full resolution and makes
a dozen full-size passes over it (upsampling, gate, kernel sums, sigmoid, softmax, blend):
at 720p on a 2-core CPU that was most of the frame's time (docs/performance.md). The
compiled kernels (``csrc/flowsep_synthesis.h``, shared by CPU and CUDA) sample the
half-resolution parameters bilinearly per output pixel instead.

Gradients: the compiled op differentiates with respect to ``params`` only (FlowSep's other
inputs are computed without gradients); its backward writes the gradient of the
full-resolution parameters per pixel and maps it through ``upsample_bilinear2d``'s adjoint.
When any other input needs a gradient, when ``n`` exceeds the compiled bound, or when no
extension is available (``SEPCONV_NO_EXT=1``, a failed build, ``op_impl("torch")``), the
reference composition runs instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from types import ModuleType

import torch
from torch import Tensor
from torch.nn import functional as F

from .deformable_separable_conv import deformable_separable_conv
from .separable_conv import Extension, compute_dtype, get_op_impl, select_extension

__all__ = [
    "SPLAT_PRIOR", "flowsep_synthesis", "flowsep_synthesis_reference", "params_per_frame", "reference_synthesis",
]

# Share of the splat candidate in the untrained blend (see models/flowsep.py).
SPLAT_PRIOR = 1e-3
MAX_COMPILED_TAPS = 5  # flowsep::kMaxTaps in csrc/flowsep_synthesis.h

KERNELS = {
    "cpu": Extension("sepconv_flowsep_synthesis_cpu", ("flowsep_synthesis_cpu.cpp",)),
    "cuda": Extension("sepconv_flowsep_synthesis", ("flowsep_synthesis.cpp", "flowsep_synthesis_cuda.cu")),
}


def params_per_frame(taps: int) -> int:
    """k = 2n + 3n²: the head channels of one frame (kernels, offsets, masks)."""
    return 2 * taps + 3 * taps * taps


def _kernel_sum(vertical: Tensor, horizontal: Tensor, mask: Tensor) -> Tensor:
    """Σ_ij v_i·h_j·m_ij per pixel, (B, 1, H, W) (as ``models.blocks.deformable_kernel_sum``)."""
    b, n, h, w = vertical.shape
    taps = vertical.unsqueeze(2) * horizontal.unsqueeze(1) * mask.view(b, n, n, h, w)
    return taps.sum(dim=(1, 2)).unsqueeze(1)


def _candidate(frame: Tensor, residual: Tensor, flow: Tensor, taps: int) -> Tensor:
    """One frame through the deformable separable convolution, its taps moved by ``flow`` + residual."""
    n, nn_ = taps, taps * taps
    centre = torch.zeros(1, n, 1, 1, dtype=residual.dtype, device=residual.device)
    centre[:, n // 2] = 1
    vertical = centre + residual[:, :n]
    horizontal = centre + residual[:, n : 2 * n]
    offset_y = flow[:, 1:2] + residual[:, 2 * n : 2 * n + nn_]
    offset_x = flow[:, 0:1] + residual[:, 2 * n + nn_ : 2 * n + 2 * nn_]
    mask = 2 * torch.sigmoid(residual[:, 2 * n + 2 * nn_ :])
    output = deformable_separable_conv(frame, vertical, horizontal, offset_y, offset_x, mask)
    total = _kernel_sum(vertical, horizontal, mask)
    # Kernels that sum to ~0 would blow up; there the unnormalised sum is kept.
    total = torch.where(total.abs() < 0.01, torch.ones_like(total), total)
    return output / total


def flowsep_synthesis_reference(
    frame0: Tensor, frame1: Tensor, splat: Tensor, flow0: Tensor, flow1: Tensor, weight0: Tensor,
    params: Tensor, gate: Tensor, taps: int,
) -> Tensor:
    """The definition as a composition of differentiable PyTorch ops (same arguments as the op)."""
    out = F.interpolate(params, size=frame0.shape[-2:], mode="bilinear", align_corners=False)
    gate = gate.reshape(-1, 1, 1, 1).to(out.dtype)
    if not bool((gate == 1).all()):  # most calls are at t in [0.15, 0.85]: skip a full-size multiply
        out = out * gate
    k = params_per_frame(taps)
    candidate0 = _candidate(frame0, out[:, :k], flow0, taps)
    candidate1 = _candidate(frame1, out[:, k : 2 * k], flow1, taps)
    logits = torch.cat([
        torch.log(weight0.clamp_min(1e-6)),
        torch.log((1 - weight0).clamp_min(1e-6)),
        torch.full_like(weight0, math.log(SPLAT_PRIOR)),
    ], 1) + out[:, 2 * k :]
    weights = torch.softmax(logits, 1)
    return weights[:, :1] * candidate0 + weights[:, 1:2] * candidate1 + weights[:, 2:] * splat


def _check_inputs(
    frame0: Tensor, frame1: Tensor, splat: Tensor, flow0: Tensor, flow1: Tensor, weight0: Tensor,
    params: Tensor, gate: Tensor, taps: int,
) -> None:
    if taps < 1 or taps % 2 == 0:
        raise ValueError(f"flowsep_synthesis: taps must be odd and positive, got {taps}")
    batch, _, height, width = frame0.shape
    expected = {
        "frame0": (batch, 3, height, width), "frame1": (batch, 3, height, width), "splat": (batch, 3, height, width),
        "flow0": (batch, 2, height, width), "flow1": (batch, 2, height, width), "weight0": (batch, 1, height, width),
    }
    named = {"frame0": frame0, "frame1": frame1, "splat": splat, "flow0": flow0, "flow1": flow1, "weight0": weight0}
    for name, shape in expected.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"flowsep_synthesis: {name} must have shape {shape}, got {tuple(named[name].shape)}")
    channels = 2 * params_per_frame(taps) + 3
    if params.dim() != 4 or params.shape[:2] != (batch, channels):
        raise ValueError(
            f"flowsep_synthesis: params must be (B={batch}, {channels}, h, w) for {taps} taps, got {tuple(params.shape)}"
        )
    if tuple(gate.shape) != (batch,):
        raise ValueError(f"flowsep_synthesis: gate must have shape ({batch},), got {tuple(gate.shape)}")


_force_reference = False


@contextlib.contextmanager
def reference_synthesis() -> Iterator[None]:
    """Run ``flowsep_synthesis`` as the reference composition inside this block, while the
    other ops keep their compiled kernels: the before/after benchmarks and the test that
    holds the fused kernel to the composition on real frames compare the two this way."""
    global _force_reference
    previous, _force_reference = _force_reference, True
    try:
        yield
    finally:
        _force_reference = previous


def _extension(device: torch.device) -> ModuleType | None:
    return select_extension(KERNELS, device)


def flowsep_synthesis(
    frame0: Tensor, frame1: Tensor, splat: Tensor, flow0: Tensor, flow1: Tensor, weight0: Tensor,
    params: Tensor, gate: Tensor, taps: int,
) -> Tensor:
    """FlowSep's output frame (B, 3, H, W) from its head ``params`` (see the module docstring)."""
    _check_inputs(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps)
    others_need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (frame0, frame1, splat, flow0, flow1, weight0, gate)
    )
    compiled = taps <= MAX_COMPILED_TAPS and not others_need_grad and not _force_reference and get_op_impl() != "torch"
    if not compiled or _extension(frame0.device) is None:
        return flowsep_synthesis_reference(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps)
    return torch.ops.sepconv.flowsep_synthesis(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps)


# --------------------------------------------------------------------------- custom ops


def _compiled_inputs(tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    dtype = compute_dtype(torch.promote_types(tensors[0].dtype, tensors[-2].dtype))  # frames' and params'
    return tuple(t.to(dtype) for t in tensors[:-1]) + (tensors[-1].to(dtype).contiguous(),)


@torch.library.custom_op("sepconv::flowsep_synthesis", mutates_args=())
def _forward_op(
    frame0: Tensor, frame1: Tensor, splat: Tensor, flow0: Tensor, flow1: Tensor, weight0: Tensor,
    params: Tensor, gate: Tensor, taps: int,
) -> Tensor:
    extension = _extension(frame0.device)
    inputs = _compiled_inputs((frame0, frame1, splat, flow0, flow1, weight0, params, gate))
    if frame0.device.type == "cuda":
        inputs = tuple(t.contiguous() for t in inputs)
    return extension.forward(*inputs, taps)


@_forward_op.register_fake
def _forward_fake(
    frame0: Tensor, frame1: Tensor, splat: Tensor, flow0: Tensor, flow1: Tensor, weight0: Tensor,
    params: Tensor, gate: Tensor, taps: int,
) -> Tensor:
    return frame0.new_empty(frame0.shape, dtype=compute_dtype(torch.promote_types(frame0.dtype, params.dtype)))


@torch.library.custom_op("sepconv::flowsep_synthesis_backward", mutates_args=())
def _backward_op(
    grad_out: Tensor, frame0: Tensor, frame1: Tensor, splat: Tensor, flow0: Tensor, flow1: Tensor,
    weight0: Tensor, params: Tensor, gate: Tensor, taps: int,
) -> Tensor:
    """The gradient with respect to ``params`` (B, P, h, w)."""
    extension = _extension(frame0.device)
    inputs = _compiled_inputs((frame0, frame1, splat, flow0, flow1, weight0, params, gate))
    grad_out = grad_out.to(inputs[0].dtype)
    if frame0.device.type == "cuda":
        inputs = tuple(t.contiguous() for t in inputs)
        grad_out = grad_out.contiguous()
    full = extension.backward(grad_out, *inputs, taps)  # (B, P, H, W), d/d(upsampled, ungated)
    if full.shape[-2:] != params.shape[-2:]:
        full = torch.ops.aten.upsample_bilinear2d_backward(
            full, list(frame0.shape[-2:]), list(params.shape), False
        )
    return full.to(params.dtype)


@_backward_op.register_fake
def _backward_fake(
    grad_out: Tensor, frame0: Tensor, frame1: Tensor, splat: Tensor, flow0: Tensor, flow1: Tensor,
    weight0: Tensor, params: Tensor, gate: Tensor, taps: int,
) -> Tensor:
    return params.new_empty(params.shape)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
    ctx.save_for_backward(*inputs[:8])
    ctx.taps = inputs[8]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    saved = ctx.saved_tensors
    grad_params = torch.ops.sepconv.flowsep_synthesis_backward(grad_out, *saved, ctx.taps)
    return None, None, None, None, None, None, grad_params, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)

# Sums of many bilinear products of learned weights: run both ops in float32 under autocast.
for _device in ("cuda", "cpu"):
    torch.library.register_autocast("sepconv::flowsep_synthesis", _device, torch.float32)
    torch.library.register_autocast("sepconv::flowsep_synthesis_backward", _device, torch.float32)
