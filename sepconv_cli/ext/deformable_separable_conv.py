"""Deformable separable convolution, the synthesis step of DSepConv (Cheng & Chen, AAAI 2020).

For ``n`` (odd) taps, radius ``r = n // 2`` and every output pixel ``(y, x)``::

    out[b, c, y, x] = sum_{i, j < n} v[b, i, y, x] * h[b, j, y, x] * m[b, k, y, x]
                      * bilinear(frame[b, c], y + i - r + dy[b, k, y, x],
                                              x + j - r + dx[b, k, y, x]),   k = i * n + j

Shapes: ``frame`` (B, C, H, W) -- *not* padded, unlike ``separable_conv``; ``vertical`` and
``horizontal`` (B, n, H, W); ``offset_y``, ``offset_x`` and ``mask`` (B, n*n, H, W); result
(B, C, H, W). ``offset_y``/``offset_x`` are in pixels, ``k`` is row-major over (i, j).

Border convention: a sample position is clamped into the frame, ``[0, H-1] x [0, W-1]``,
before bilinear interpolation. For integer positions this is replicate padding, the padding
SepConv uses, so with offsets 0 and masks 1 the op equals
``separable_conv(replicate_pad(frame, r), v, h)``; with ``n = 1`` it is backward warping by
``(dx, dy)`` like ``grid_sample(mode="bilinear", padding_mode="border", align_corners=True)``.

Gradient conventions (the same as ``grid_sample``'s): the clamp passes an offset gradient
only where the position lies strictly inside ``(0, size-1)``; on the border line and outside
it the offset gradient along that axis is 0 (the value does not change when moving outwards).
At interior integer positions bilinear interpolation has a kink; the op returns the one-sided
derivative towards +1 (``f[p+1] - f[p]``). Gradients w.r.t. ``frame``, ``vertical``,
``horizontal`` and ``mask`` are the exact ones. Double backward is not supported. A
non-finite offset gives a non-finite output at that pixel, never an out-of-bounds read.

Implementations, chosen per device inside the custom op ``sepconv::deformable_separable_conv``:

* CPU (``csrc/deformable_separable_conv_cpu.cpp``, built by ``load_cpu_extension``): forward
  only, one task per output row, the bilinear weights of a tap computed once for all
  channels; the backward on the CPU is the PyTorch one below.
* PyTorch (the reference for both compiled kernels, the CPU backward, and the fall-back
  when an extension does not build): loops over the n*n taps and
  accumulates gather-based bilinear samples, so memory stays O(B*C*H*W) whatever ``n`` is;
  the frame is padded by one replicated row and column so the four bilinear corners of a
  clamped position are always in bounds. The backward reduces everything but the frame
  gradient to four per-pixel channel sums and uses ``scatter_add_`` for the frame gradient.
  Speed, B=1, C=3, n=5, 256x448, float32, offsets ~N(0, 3 px), torch 2.13 CPU, one thread
  on a 2-core machine shared with other jobs (load ~3; medians of 9, spread over 3 runs):
  forward 66-90 ms; forward + backward 220-330 ms without the frame gradient (training:
  frames need none), 285-450 ms with it. Two threads were slower on the loaded machine.
* CUDA (``csrc/deformable_separable_conv_cuda.cu``, JIT-built by ``load_extension``): forward
  one thread per output pixel over all channels; backward one thread per pixel gathering the
  v/h/offset/mask gradients, and a separate kernel scattering the frame gradient with
  ``atomicAdd`` (data-dependent sample positions rule out a gather formulation for it).
  float32 and float64 kernels; other dtypes are computed in float32 and cast back. Follows
  ``separable_conv``'s ``set_op_impl`` / ``op_impl`` switch ("auto" | "compiled" | "torch").

``deformable_separable_conv_reference`` is the PyTorch forward written with differentiable
ops only; autograd through it is an independent check of the hand-written backward.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from .separable_conv import Extension, autocast_enabled, compute_dtype, select_extension

__all__ = ["deformable_separable_conv", "deformable_separable_conv_reference"]

KERNELS = {
    "cpu": Extension("sepconv_deformable_separable_conv_cpu", ("deformable_separable_conv_cpu.cpp",)),
    "cuda": Extension(
        "sepconv_deformable_separable_conv", ("deformable_separable_conv.cpp", "deformable_separable_conv_cuda.cu")
    ),
}


# --------------------------------------------------------------------------- dispatch


def _extension(device: torch.device) -> ModuleType | None:
    """The compiled extension for tensors on ``device``, or None for the PyTorch path.

    Follows the project-wide ``set_op_impl`` / ``op_impl`` switch of ``separable_conv``
    ("auto", "compiled": raise when it does not build, "torch").
    """
    return select_extension(KERNELS, device)


# --------------------------------------------------------------------------- checks


def _check_inputs(
    frame: Tensor, vertical: Tensor, horizontal: Tensor, offset_y: Tensor, offset_x: Tensor, mask: Tensor,
    same_dtype: bool = True,
) -> None:
    named = {
        "frame": frame,
        "vertical": vertical,
        "horizontal": horizontal,
        "offset_y": offset_y,
        "offset_x": offset_x,
        "mask": mask,
    }
    for name, tensor in named.items():
        if not isinstance(tensor, Tensor):
            raise ValueError(f"deformable_separable_conv: {name} must be a tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(
                f"deformable_separable_conv: {name} must have 4 dimensions, got shape {tuple(tensor.shape)}"
            )
    if not frame.is_floating_point():
        raise ValueError(f"deformable_separable_conv: frame must be a floating-point tensor, got {frame.dtype}")
    batch, _, height, width = frame.shape
    taps = vertical.shape[1]
    if taps % 2 != 1:
        raise ValueError(
            f"deformable_separable_conv: the kernel needs an odd number of taps, got vertical of shape "
            f"{tuple(vertical.shape)} ({taps} taps)"
        )
    expected = {
        "vertical": (batch, taps, height, width),
        "horizontal": (batch, taps, height, width),
        "offset_y": (batch, taps * taps, height, width),
        "offset_x": (batch, taps * taps, height, width),
        "mask": (batch, taps * taps, height, width),
    }
    for name, shape in expected.items():
        tensor = named[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"deformable_separable_conv: {name} must have shape {shape} for frame {tuple(frame.shape)} and "
                f"{taps} taps, got {tuple(tensor.shape)}"
            )
        # Under autocast the registered policy casts everything to float32 below us.
        if (same_dtype and tensor.dtype != frame.dtype) or tensor.device != frame.device:
            raise ValueError(
                f"deformable_separable_conv: {name} is {tensor.dtype} on {tensor.device} but frame is "
                f"{frame.dtype} on {frame.device}"
            )


# --------------------------------------------------------------------------- PyTorch path


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precision cannot hold pixel coordinates above 2048 exactly.
    return torch.promote_types(dtype, torch.float32)


def _axis(position: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Clamp ``position`` into ``[0, size-1]``; return (low index, high index, fraction, inside).

    Differentiable (for the reference). ``inside`` marks positions strictly inside
    ``(0, size-1)``: the only ones whose gradient passes the clamp. NaN positions read
    index 0 with a NaN fraction.
    """
    top = float(size - 1)
    inside = (position > 0) & (position < top)
    clamped = position.clamp(0.0, top)
    if clamped.requires_grad:
        # torch.clamp passes gradient on the border line too; ours does not (like grid_sample).
        clamped = torch.where(inside, position, clamped.detach())
    low = clamped.detach().nan_to_num(0.0).floor()
    fraction = clamped - low
    low_index = low.long()
    high_index = (low_index + 1).clamp_max(size - 1)
    return low_index, high_index, fraction, inside


def _gather(flat: Tensor, index: Tensor) -> Tensor:
    return flat.gather(2, index.expand(-1, flat.shape[1], -1))


def deformable_separable_conv_reference(
    frame: Tensor, vertical: Tensor, horizontal: Tensor, offset_y: Tensor, offset_x: Tensor, mask: Tensor
) -> Tensor:
    """The definition in plain, differentiable PyTorch ops (same arguments as the op).

    Autograd through it gives the documented gradient conventions, which makes it the check
    of the op's hand-written backward. Device-agnostic; memory O(B*C*H*W) for any ``n``.
    """
    _check_inputs(frame, vertical, horizontal, offset_y, offset_x, mask)
    if frame.numel() == 0 or vertical.numel() == 0:
        return frame.new_zeros(frame.shape)
    dtype = frame.dtype
    work = _work_dtype(dtype)
    frame, vertical, horizontal, offset_y, offset_x, mask = (
        t.to(work) for t in (frame, vertical, horizontal, offset_y, offset_x, mask)
    )
    batch, channels, height, width = frame.shape
    taps = vertical.shape[1]
    radius = taps // 2
    flat = frame.reshape(batch, channels, height * width)
    rows = torch.arange(height, dtype=work, device=frame.device).view(1, height, 1)
    cols = torch.arange(width, dtype=work, device=frame.device).view(1, 1, width)
    out = flat.new_zeros(batch, channels, height * width)
    for i in range(taps):
        for j in range(taps):
            k = i * taps + j
            y0, y1, fy, _ = _axis(rows + (i - radius) + offset_y[:, k], height)
            x0, x1, fx, _ = _axis(cols + (j - radius) + offset_x[:, k], width)
            fy, fx = fy.reshape(batch, 1, -1), fx.reshape(batch, 1, -1)
            weight = (vertical[:, i] * horizontal[:, j] * mask[:, k]).reshape(batch, 1, -1)
            corners = [(y * width + x).reshape(batch, 1, -1) for y in (y0, y1) for x in (x0, x1)]
            weights = ((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx)
            for index, bilinear in zip(corners, weights):
                out = out + weight * bilinear * _gather(flat, index)
    return out.view(batch, channels, height, width).to(dtype)


def _fast_axis(position: Tensor, size: int, need_inside: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """In place on ``position``: (low index, fraction, inside or None); see ``_axis``."""
    top = float(size - 1)
    inside = (position > 0) & (position < top) if need_inside else None
    position.clamp_(0.0, top)
    low = position.floor()
    fraction = position.sub_(low)
    return low.nan_to_num_(0.0).long(), fraction, inside


def _fast_taps(frame: Tensor, offset_y: Tensor, offset_x: Tensor, taps: int, need_inside: bool):
    """Per tap: (i, j, k, top-left corner index (B, 1, H*W) into the frame padded by one
    row and column at the bottom and right, fy, fx (B, 1, H*W), inside_y, inside_x)."""
    batch, _, height, width = frame.shape
    radius = taps // 2
    rows = torch.arange(height, dtype=offset_y.dtype, device=frame.device).view(1, height, 1)
    cols = torch.arange(width, dtype=offset_x.dtype, device=frame.device).view(1, 1, width)
    for i in range(taps):
        for j in range(taps):
            k = i * taps + j
            y0, fy, inside_y = _fast_axis(offset_y[:, k] + (rows + (i - radius)), height, need_inside)
            x0, fx, inside_x = _fast_axis(offset_x[:, k] + (cols + (j - radius)), width, need_inside)
            corner = y0.mul_(width + 1).add_(x0).reshape(batch, 1, -1)
            yield i, j, k, corner, fy.reshape(batch, 1, -1), fx.reshape(batch, 1, -1), inside_y, inside_x


def _pad_for_corners(frame: Tensor) -> Tensor:
    """(B, C, (H+1)*(W+1)): one replicated row and column at the bottom and right.

    The high neighbour of a clamped index then always exists, and is only ever read with
    bilinear weight 0 when it lies in the padding (the fraction is 0 at the last row/column).
    """
    batch, channels = frame.shape[:2]
    return torch.nn.functional.pad(frame, (0, 1, 0, 1), mode="replicate").reshape(batch, channels, -1)


def _torch_forward(
    frame: Tensor, vertical: Tensor, horizontal: Tensor, offset_y: Tensor, offset_x: Tensor, mask: Tensor
) -> Tensor:
    """The op's PyTorch path: in-place accumulation over the taps, no autograd."""
    if frame.numel() == 0 or vertical.numel() == 0:
        return frame.new_zeros(frame.shape)
    dtype = frame.dtype
    work = _work_dtype(dtype)
    frame, vertical, horizontal, offset_y, offset_x, mask = (
        t.to(work).contiguous() for t in (frame, vertical, horizontal, offset_y, offset_x, mask)
    )
    batch, channels, height, width = frame.shape
    padded = _pad_for_corners(frame)
    step = width + 1
    out = frame.new_zeros(batch, channels, height * width)
    for i, j, k, corner, fy, fx, _, _ in _fast_taps(frame, offset_y, offset_x, vertical.shape[1], False):
        weight = (vertical[:, i] * horizontal[:, j] * mask[:, k]).reshape(batch, 1, -1)
        wy1 = weight * fy
        wy0 = weight - wy1
        c01, c11 = wy0 * fx, wy1 * fx
        for shift, coefficient in ((0, wy0.sub_(c01)), (1, c01), (step, wy1.sub_(c11)), (step + 1, c11)):
            out.addcmul_(_gather(padded, corner + shift if shift else corner), coefficient)
    return out.view(batch, channels, height, width).to(dtype)


def _torch_backward(
    grad_out: Tensor,
    frame: Tensor,
    vertical: Tensor,
    horizontal: Tensor,
    offset_y: Tensor,
    offset_x: Tensor,
    mask: Tensor,
    frame_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Hand-written gradients. Everything the offsets, mask and kernels need reduces to
    four per-pixel channel sums S_ab = sum_c grad_out * frame[corner ab]."""
    if frame.numel() == 0 or vertical.numel() == 0:
        return tuple(torch.zeros_like(t) for t in (frame, vertical, horizontal, offset_y, offset_x, mask))
    dtypes = [t.dtype for t in (frame, vertical, horizontal, offset_y, offset_x, mask)]
    work = _work_dtype(frame.dtype)
    grad_out, frame, vertical, horizontal, offset_y, offset_x, mask = (
        t.to(work).contiguous() for t in (grad_out, frame, vertical, horizontal, offset_y, offset_x, mask)
    )
    batch, channels, height, width = frame.shape
    taps = vertical.shape[1]
    padded = _pad_for_corners(frame)
    step = width + 1
    grad = grad_out.reshape(batch, channels, height * width)
    grad_padded = torch.zeros_like(padded) if frame_grad else None
    grad_v = torch.zeros_like(vertical)
    grad_h = torch.zeros_like(horizontal)
    grad_oy = torch.empty_like(offset_y)
    grad_ox = torch.empty_like(offset_x)
    grad_m = torch.empty_like(mask)
    for i, j, k, corner, fy, fx, inside_y, inside_x in _fast_taps(frame, offset_y, offset_x, taps, True):
        indices = [corner + shift if shift else corner for shift in (0, 1, step, step + 1)]
        s00, s01, s10, s11 = ((grad * _gather(padded, index)).sum(1) for index in indices)
        fy, fx = fy.view(batch, height, width), fx.view(batch, height, width)
        d_top = (s01 - s00).view(batch, height, width)
        d_bottom = (s11 - s10).view(batch, height, width)
        top = d_top * fx + s00.view(batch, height, width)
        g_fy = d_bottom * fx + s10.view(batch, height, width) - top
        g_w = g_fy * fy + top
        g_fx = torch.lerp(d_top, d_bottom, fy)
        v, h, m = vertical[:, i], horizontal[:, j], mask[:, k]
        vh = v * h
        weight = vh * m
        torch.mul(vh, g_w, out=grad_m[:, k])
        grad_oy[:, k] = torch.where(inside_y, weight * g_fy, 0.0)
        grad_ox[:, k] = torch.where(inside_x, weight * g_fx, 0.0)
        g_wm = g_w * m
        grad_v[:, i].addcmul_(h, g_wm)
        grad_h[:, j].addcmul_(v, g_wm)
        if grad_padded is not None:
            # Coefficients per pixel first (1/C of the work), then one product per corner.
            wy1 = weight * fy
            wy0 = weight - wy1
            c01, c11 = wy0 * fx, wy1 * fx
            for index, coefficient in zip(indices, (wy0.sub_(c01), c01, wy1.sub_(c11), c11)):
                value = grad * coefficient.view(batch, 1, -1)
                grad_padded.scatter_add_(2, index.expand(-1, channels, -1), value)
    if grad_padded is None:
        grad_frame = torch.zeros_like(frame)
    else:
        grad_frame = grad_padded.view(batch, channels, height + 1, width + 1)[:, :, :height, :width]
    grads = (grad_frame, grad_v, grad_h, grad_oy, grad_ox, grad_m)
    return tuple(g.to(d).contiguous() for g, d in zip(grads, dtypes))  # type: ignore[return-value]


# --------------------------------------------------------------------------- custom ops


@torch.library.custom_op("sepconv::deformable_separable_conv", mutates_args=())
def _forward_op(
    frame: Tensor, vertical: Tensor, horizontal: Tensor, offset_y: Tensor, offset_x: Tensor, mask: Tensor
) -> Tensor:
    _check_inputs(frame, vertical, horizontal, offset_y, offset_x, mask)
    extension = _extension(frame.device)
    if extension is None:
        return _torch_forward(frame, vertical, horizontal, offset_y, offset_x, mask)
    dtype = compute_dtype(frame.dtype)
    inputs = (frame, vertical, horizontal, offset_y, offset_x, mask)
    if frame.device.type == "cpu":
        # The CPU kernel reads every input through its strides.
        return extension.forward(*(t.to(dtype) for t in inputs)).to(frame.dtype)
    return extension.forward(*(t.to(dtype).contiguous() for t in inputs)).to(frame.dtype)


@_forward_op.register_fake
def _forward_fake(
    frame: Tensor, vertical: Tensor, horizontal: Tensor, offset_y: Tensor, offset_x: Tensor, mask: Tensor
) -> Tensor:
    _check_inputs(frame, vertical, horizontal, offset_y, offset_x, mask)
    return frame.new_empty(frame.shape)


@torch.library.custom_op("sepconv::deformable_separable_conv_backward", mutates_args=())
def _backward_op(
    grad_out: Tensor,
    frame: Tensor,
    vertical: Tensor,
    horizontal: Tensor,
    offset_y: Tensor,
    offset_x: Tensor,
    mask: Tensor,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients w.r.t. (frame, vertical, horizontal, offset_y, offset_x, mask).

    ``output_mask[0]`` False skips the frame gradient (returned as zeros); the other five
    come from one pass and are always computed.
    """
    return _torch_backward(grad_out, frame, vertical, horizontal, offset_y, offset_x, mask, bool(output_mask[0]))


@_backward_op.register_kernel("cuda")
def _backward_cuda(
    grad_out: Tensor,
    frame: Tensor,
    vertical: Tensor,
    horizontal: Tensor,
    offset_y: Tensor,
    offset_x: Tensor,
    mask: Tensor,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    inputs = (frame, vertical, horizontal, offset_y, offset_x, mask)
    extension = _extension(frame.device)
    if extension is None:
        return _torch_backward(grad_out, *inputs, bool(output_mask[0]))
    dtype = compute_dtype(frame.dtype)
    grads = extension.backward(
        grad_out.to(dtype).contiguous(), *(t.to(dtype).contiguous() for t in inputs), bool(output_mask[0])
    )
    return tuple(g.to(t.dtype) for g, t in zip(grads, inputs))  # type: ignore[return-value]


@_backward_op.register_fake
def _backward_fake(
    grad_out: Tensor,
    frame: Tensor,
    vertical: Tensor,
    horizontal: Tensor,
    offset_y: Tensor,
    offset_x: Tensor,
    mask: Tensor,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    inputs = (frame, vertical, horizontal, offset_y, offset_x, mask)
    return tuple(t.new_empty(t.shape) for t in inputs)  # type: ignore[return-value]


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    needs = list(ctx.needs_input_grad[:6])
    grads = torch.ops.sepconv.deformable_separable_conv_backward(grad_out, *ctx.saved_tensors, needs)
    return tuple(g if need else None for g, need in zip(grads, needs))


_forward_op.register_autograd(_backward, setup_context=_setup_context)

# Each output sums 4*n*n bilinear products of learned weights: run both ops in float32
# under autocast.
for _device in ("cuda", "cpu"):
    torch.library.register_autocast("sepconv::deformable_separable_conv", _device, torch.float32)
    torch.library.register_autocast("sepconv::deformable_separable_conv_backward", _device, torch.float32)


def deformable_separable_conv(
    frame: Tensor, vertical: Tensor, horizontal: Tensor, offset_y: Tensor, offset_x: Tensor, mask: Tensor
) -> Tensor:
    """Deformable separable convolution (see the module docstring for the exact definition).

    frame (B, C, H, W) unpadded; vertical, horizontal (B, n, H, W) with n odd; offset_y,
    offset_x, mask (B, n*n, H, W), tap k = i*n + j. Returns (B, C, H, W). Differentiable
    w.r.t. every input; raises ValueError on inconsistent shapes, dtypes or devices.
    """
    _check_inputs(frame, vertical, horizontal, offset_y, offset_x, mask, same_dtype=not autocast_enabled(frame.device))
    return torch.ops.sepconv.deformable_separable_conv(frame, vertical, horizontal, offset_y, offset_x, mask)
