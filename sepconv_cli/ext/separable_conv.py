"""Local separable convolution, the core operation of SepConv (Niklaus et al. 2017).

Every output pixel has its own pair of 1-D kernels, so this is not a convolution in
the cuDNN sense and ``torch.nn.functional.conv2d`` cannot compute it::

    out[b, c, y, x] = sum_i sum_j vertical[b, i, y, x] * horizontal[b, j, y, x]
                                  * frame[b, c, y + i, x + j]

Shapes: ``frame`` (B, C, H+k-1, W+k-1), already padded by the caller; ``vertical`` and
``horizontal`` (B, k, H, W); result (B, C, H, W). Values may be any reals: frames are
colours in [0, 1] in SepConv and the kernels are unconstrained network outputs, which
this op does not normalise.

Implementations, chosen per call by :func:`set_op_impl` / :func:`op_impl`:

* the compiled CPU kernel ``csrc/separable_conv_cpu.cpp`` (forward only; k <= 64), built
  on first use by ``_build.load_cpu_extension``: a direct per-pixel sum vectorised along
  the kernel taps, about twice as fast as the PyTorch path below (figures in
  docs/performance.md);
* the CUDA kernels ``csrc/separable_conv_cuda.cu``, built by ``_build.load_extension``;
* the pure-PyTorch path (:func:`separable_conv_reference`): device-agnostic, the
  reference both compiled kernels are tested against, the CPU backward, and the
  fall-back whenever a kernel does not build.

PyTorch formulation. The direct sum costs k*k multiply-adds per output value and, because
both kernels vary per pixel, no reordering reduces that count, so what matters is
running those multiply-adds as matrix products rather than as element-wise passes. For
a tile of ``tw`` output columns of one row, ``horizontal`` is written into a banded
(tw+k-1) x tw matrix (column t holds h[:, t] at rows t..t+k-1); multiplying the
(k*C) x (tw+k-1) block of frame rows by it gives, for every vertical tap i and channel
c, the horizontal pass at all tw columns in one GEMM; a weighted sum over i with
``vertical`` finishes. The band wastes (tw+k-1)/k of the multiply-adds (1.6x at
k=51, tw=32) but GEMM runs at several times the speed of element-wise kernels. The
frame rows for all tile rows come from one small contiguous copy viewed with
overlapping strides, so nothing of size k*k*C*H*W is ever built: the working set is
one tile, O(tile_rows * k * C * (tw+k-1)), and the only full-size buffers are the
inputs and outputs.

Measured times, B=1, C=3, k=51, float32, torch 2.13 CPU, one thread on a shared AMD
EPYC (other jobs running: best of 3 runs at 256 x 448, a single run at 720 x 1280):

=====================================================  ==========  ===========
forward formulation                                    256 x 448   720 x 1280
=====================================================  ==========  ===========
banded GEMM per 64 x 32 tile (kept)                    0.11 s      1.25 s
k*k ``addcmul_`` of shifted slices                     0.29 s      2.9 s
loop over i, ``unfold`` along W, (rows*h).sum(-1)      0.40 s      23 s
backward of the kept one, all three gradients          0.31 s      2.6 s
=====================================================  ==========  ===========

With both cores idle the first three took 0.05 s, 0.16 s and 0.16 s at 256 x 448. The
tile loop issues many small parallel kernels, so on a CPU shared with other busy
processes fewer threads (``torch.set_num_threads``) can be faster.

The backward pass reuses the tiling: three GEMMs per tile give the vertical, horizontal
and frame gradients, and the frame gradient's overlapping rows are added back with k
slice additions, again with bounded memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

from ._build import load_cpu_extension, load_extension

__all__ = [
    "CPU_MAX_TAPS",
    "CompiledKernelUnavailable",
    "Extension",
    "KERNELS",
    "OP_IMPLS",
    "get_op_impl",
    "op_impl",
    "select_extension",
    "separable_conv",
    "separable_conv_backward_reference",
    "separable_conv_reference",
    "set_op_impl",
]

# ---------------------------------------------------------------------------------
# Implementation selection, shared by every op in sepconv_cli.ext.
# ---------------------------------------------------------------------------------

#: Accepted names for :func:`set_op_impl`.
OP_IMPLS: tuple[str, ...] = ("auto", "compiled", "torch")

_impl = "auto"


def set_op_impl(name: str) -> None:
    """Choose how the ``sepconv`` ops run, process-wide.

    ``"auto"`` (default): the compiled kernel for the tensors' device (C++ on the CPU,
    CUDA on a GPU) when it builds, else PyTorch.
    ``"compiled"``: the compiled kernels, raising ``RuntimeError`` if they cannot be
    built or do not cover the call.
    ``"torch"``: the pure-PyTorch reference everywhere.
    The setting is global, not per thread. The compiled CPU kernels compute forward
    passes; gradients on the CPU always come from the PyTorch path.
    """
    global _impl
    if name not in OP_IMPLS:
        raise ValueError(f"unknown op implementation {name!r}; expected one of {', '.join(OP_IMPLS)}")
    _impl = name


def get_op_impl() -> str:
    """The current setting of :func:`set_op_impl`: one of :data:`OP_IMPLS`."""
    return _impl


@contextlib.contextmanager
def op_impl(name: str) -> Iterator[None]:
    """Run a block with :func:`set_op_impl` set to ``name``, restoring the previous value."""
    previous = get_op_impl()
    set_op_impl(name)
    try:
        yield
    finally:
        set_op_impl(previous)


class CompiledKernelUnavailable(RuntimeError):
    """``op_impl("compiled")`` is set but no compiled kernel covers the call."""


@dataclass(frozen=True)
class Extension:
    """One compiled extension: its module name and its sources in ``csrc/``."""

    name: str
    sources: tuple[str, ...]


def select_extension(kernels: Mapping[str, Extension], device: torch.device) -> ModuleType | None:
    """The compiled extension to use for tensors on ``device``, or ``None`` for PyTorch.

    ``kernels`` maps a device type ("cpu", "cuda") to the extension compiled for it;
    each is built once per process by ``_build``. Raises ``CompiledKernelUnavailable`` when
    :func:`op_impl` is ``"compiled"`` and the extension is unavailable: a silent
    fall-back would make a forced-kernel benchmark or test measure the wrong thing.
    """
    impl = get_op_impl()
    extension = kernels.get(device.type)
    if impl == "torch":
        return None
    module = None
    if extension is not None:
        loader = load_extension if device.type == "cuda" else load_cpu_extension
        module = loader(extension.name, list(extension.sources))
    if module is None and impl == "compiled":
        raise CompiledKernelUnavailable(
            f"the compiled implementation was requested but there is no compiled kernel for {device.type} "
            "tensors (no GPU, SEPCONV_NO_EXT set, or the build failed: see the warning above); "
            "'auto' or 'torch' runs the PyTorch implementation"
        )
    return module


# ---------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------

KERNELS = {
    "cpu": Extension("sepconv_separable_conv_cpu", ("separable_conv_cpu.cpp",)),
    "cuda": Extension("sepconv_separable_conv", ("separable_conv.cpp", "separable_conv_cuda.cu")),
}
# The CPU kernel keeps its per-pixel sums in registers, so it is compiled for kernels of
# up to this many taps (SepConv uses 51); longer ones take the PyTorch path.
CPU_MAX_TAPS = 64


def _check_inputs(
    frame: Tensor, vertical: Tensor, horizontal: Tensor, where: str = "separable_conv", same_dtype: bool = True
) -> None:
    """Raise ``ValueError`` with the expected and actual shapes if the inputs do not fit."""
    if frame.dim() != 4:
        raise ValueError(f"{where}: frame must be 4-D (B, C, H+k-1, W+k-1), got shape {tuple(frame.shape)}")
    for name, kernel in (("vertical", vertical), ("horizontal", horizontal)):
        if kernel.dim() != 4:
            raise ValueError(f"{where}: {name} must be 4-D (B, k, H, W), got shape {tuple(kernel.shape)}")
    if vertical.shape[1] != horizontal.shape[1]:
        raise ValueError(
            f"{where}: vertical has k={vertical.shape[1]} taps but horizontal has k={horizontal.shape[1]}; "
            "both kernels must have the same length"
        )
    if vertical.shape != horizontal.shape:
        raise ValueError(
            f"{where}: vertical and horizontal must have the same shape (B, k, H, W), "
            f"got {tuple(vertical.shape)} and {tuple(horizontal.shape)}"
        )
    batch, k, height, width = vertical.shape
    if k < 1:
        raise ValueError(f"{where}: the kernels need at least one tap, got k={k}")
    if frame.shape[0] != batch:
        raise ValueError(f"{where}: frame has batch size {frame.shape[0]} but the kernels have {batch}")
    expected = (height + k - 1, width + k - 1)
    if tuple(frame.shape[2:]) != expected:
        raise ValueError(
            f"{where}: for k={k} kernels over an output of {height}x{width} the padded frame must be "
            f"{expected[0]}x{expected[1]} (H+k-1, W+k-1), got {frame.shape[2]}x{frame.shape[3]}"
        )
    devices = {frame.device, vertical.device, horizontal.device}
    if len(devices) != 1:
        raise ValueError(
            f"{where}: frame, vertical and horizontal must be on one device, got "
            f"{frame.device}, {vertical.device} and {horizontal.device}"
        )
    dtypes = (frame.dtype, vertical.dtype, horizontal.dtype)
    if not all(d.is_floating_point for d in dtypes):
        raise ValueError(f"{where}: inputs must be floating point, got {', '.join(map(str, dtypes))}")
    if same_dtype and len(set(dtypes)) != 1:
        raise ValueError(
            f"{where}: frame, vertical and horizontal must share a dtype, got {', '.join(map(str, dtypes))} "
            "(under torch.autocast they are all computed in float32)"
        )


# ---------------------------------------------------------------------------------
# Pure-PyTorch implementation (see the module docstring for the formulation)
# ---------------------------------------------------------------------------------

# Tile width: 32 output columns made the fastest GEMMs on CPU (24 and 40 were 20-40%
# slower); the band then holds tw+k-1 = 82 frame columns for k = 51.
_TILE_W = 32
# Tile height on CPU: 64 rows keep one tile's buffers (about 2 MB at k=51, C=3) within
# a core's L2 cache; 128 and 256 rows were 10-20% slower.
_TILE_H_CPU = 64
# Elsewhere (the torch path on a GPU) fewer, larger launches matter more than caches:
# cap one tile's largest buffer at this many elements instead.
_TILE_ELEMENTS = 1 << 25


def _tile_rows(frame: Tensor, k: int, height: int) -> int:
    if frame.device.type == "cpu":
        return _TILE_H_CPU
    channels = frame.shape[1]
    return max(1, min(height, _TILE_ELEMENTS // (k * channels * (_TILE_W + k - 1))))


def _tiles(height: int, width: int, tile_rows: int) -> Iterator[tuple[int, int, int, int]]:
    for y0 in range(0, height, tile_rows):
        for x0 in range(0, width, _TILE_W):
            yield y0, min(height, y0 + tile_rows), x0, min(width, x0 + _TILE_W)


def _band_diagonals(band: Tensor, k: int) -> Tensor:
    """View of the k diagonals of a (r, tw+k-1, tw) band as (r, k, tw): [y, j, t] -> band[y, t+j, t]."""
    rows, span, tw = band.shape
    return band.as_strided((rows, k, tw), (span * tw, tw, tw + 1), band.storage_offset())


def _band(horizontal_tile: Tensor) -> Tensor:
    """(k, r, tw) kernels -> (r, tw+k-1, tw) band, so that frame_rows @ band is the horizontal pass."""
    k, rows, tw = horizontal_tile.shape
    band = horizontal_tile.new_zeros(rows, tw + k - 1, tw)
    # Gathering the tile into (r, k, tw) order first makes the scatter along the
    # diagonals three times faster than copying from the strided input directly.
    _band_diagonals(band, k).copy_(horizontal_tile.transpose(0, 1).contiguous())
    return band


def _frame_rows(frame_tile: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(C, r+k-1, tw+k-1) frame window -> (its contiguous (r+k-1, C, tw+k-1) copy, (r, k*C, tw+k-1) view).

    Row y of the view stacks frame rows y..y+k-1 for every channel. Consecutive y
    overlap in memory, so the k-fold duplication is never materialised.
    """
    channels, rows_in, span = frame_tile.shape
    rows = rows_in - k + 1
    copy = frame_tile.transpose(0, 1).contiguous()
    return copy, copy.as_strided((rows, k * channels, span), (channels * span, span, 1))


def separable_conv_reference(frame: Tensor, vertical: Tensor, horizontal: Tensor) -> Tensor:
    """Pure-PyTorch local separable convolution, on any device.

    Args:
        frame: (B, C, H+k-1, W+k-1) padded input, any real values.
        vertical: (B, k, H, W) per-pixel vertical kernels.
        horizontal: (B, k, H, W) per-pixel horizontal kernels.

    Returns:
        (B, C, H, W) in the inputs' dtype: ``out[b,c,y,x] = sum_ij vertical[b,i,y,x] *
        horizontal[b,j,y,x] * frame[b,c,y+i,x+j]``.

    Differentiable through ordinary autograd, though :func:`separable_conv` is the
    memory-efficient way to train: its backward recomputes tiles instead of saving them.
    """
    _check_inputs(frame, vertical, horizontal, "separable_conv_reference")
    batch, channels = frame.shape[:2]
    k, height, width = vertical.shape[1:]
    out = frame.new_empty(batch, channels, height, width)
    tile_rows = _tile_rows(frame, k, height)
    for b in range(batch):
        for y0, y1, x0, x1 in _tiles(height, width, tile_rows):
            rows, tw = y1 - y0, x1 - x0
            _, lhs = _frame_rows(frame[b, :, y0 : y1 + k - 1, x0 : x1 + k - 1], k)
            band = _band(horizontal[b, :, y0:y1, x0:x1])
            passes = torch.bmm(lhs, band).view(rows, k, channels, tw)
            weights = vertical[b, :, y0:y1, x0:x1].transpose(0, 1).unsqueeze(2)
            out[b, :, y0:y1, x0:x1] = (passes * weights).sum(1).transpose(0, 1)
    return out


def separable_conv_backward_reference(
    grad_out: Tensor,
    frame: Tensor,
    vertical: Tensor,
    horizontal: Tensor,
    output_mask: Sequence[bool] = (True, True, True),
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`separable_conv_reference` for (frame, vertical, horizontal).

    ``grad_out`` is (B, C, H, W). Gradients whose ``output_mask`` entry is false are
    returned as zeros without being computed (frames rarely need one in SepConv).
    """
    _check_inputs(frame, vertical, horizontal, "separable_conv_backward")
    batch, channels = frame.shape[:2]
    k, height, width = vertical.shape[1:]
    if tuple(grad_out.shape) != (batch, channels, height, width):
        raise ValueError(
            f"separable_conv_backward: grad_out must be {(batch, channels, height, width)}, "
            f"got {tuple(grad_out.shape)}"
        )
    need_frame, need_vertical, need_horizontal = (bool(m) for m in output_mask)
    grad_out = grad_out.to(frame.dtype)
    # The tiles cover every kernel position, so only unrequested gradients and the
    # frame gradient, which tiles add into, need zeroing.
    grad_frame = torch.zeros_like(frame, memory_format=torch.contiguous_format)
    grad_vertical = (torch.empty_like if need_vertical else torch.zeros_like)(
        vertical, memory_format=torch.contiguous_format
    )
    grad_horizontal = (torch.empty_like if need_horizontal else torch.zeros_like)(
        horizontal, memory_format=torch.contiguous_format
    )
    tile_rows = _tile_rows(frame, k, height)
    for b in range(batch):
        for y0, y1, x0, x1 in _tiles(height, width, tile_rows):
            rows, tw = y1 - y0, x1 - x0
            span = tw + k - 1
            grad = grad_out[b, :, y0:y1, x0:x1].transpose(0, 1)  # (r, C, tw)
            weights = vertical[b, :, y0:y1, x0:x1].transpose(0, 1)  # (r, k, tw)
            band = _band(horizontal[b, :, y0:y1, x0:x1])
            if need_vertical or need_horizontal:
                _, lhs = _frame_rows(frame[b, :, y0 : y1 + k - 1, x0 : x1 + k - 1], k)
            if need_vertical:
                passes = torch.bmm(lhs, band).view(rows, k, channels, tw)
                grad_v = (passes * grad.unsqueeze(1)).sum(2)
                grad_vertical[b, :, y0:y1, x0:x1] = grad_v.transpose(0, 1)
            if not (need_frame or need_horizontal):
                continue
            # d out / d (horizontal pass at tap i, channel c) = grad * vertical_i.
            weighted = (weights.unsqueeze(2) * grad.unsqueeze(1)).reshape(rows, k * channels, tw)
            if need_horizontal:
                grad_band = torch.bmm(lhs.transpose(1, 2), weighted)
                grad_horizontal[b, :, y0:y1, x0:x1] = _band_diagonals(grad_band, k).transpose(0, 1)
            if need_frame:
                grad_rows = torch.bmm(weighted, band.transpose(1, 2)).view(rows, k, channels * span)
                # Row y of the stacked view read frame rows y..y+k-1: add each tap back
                # onto the row it came from.
                grad_tile = grad_rows.new_zeros(rows + k - 1, channels * span)
                for i in range(k):
                    # add_ on the view, not `+=` on an index, which would copy it back.
                    grad_tile[i : i + rows].add_(grad_rows[:, i])
                grad_frame[b, :, y0 : y1 + k - 1, x0 : x1 + k - 1].add_(
                    grad_tile.view(rows + k - 1, channels, span).transpose(0, 1)
                )
    return grad_frame, grad_vertical, grad_horizontal


# ---------------------------------------------------------------------------------
# Compiled kernels (csrc/): the CPU kernel and the CUDA kernels
# ---------------------------------------------------------------------------------

# The kernels are compiled for float32 and float64; half inputs reaching them outside
# autocast are computed in float32 and cast back.
_KERNEL_DTYPES = (torch.float32, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the compiled kernels run in for inputs of ``dtype``."""
    return dtype if dtype in _KERNEL_DTYPES else torch.float32


def autocast_enabled(device: torch.device) -> bool:
    """Whether autocast is on for ``device``: then mixed input dtypes are expected, since
    the registered policy casts every input to float32 before the op runs."""
    return torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)


def _forward_extension(frame: Tensor, taps: int) -> ModuleType | None:
    if frame.device.type == "cpu" and taps > CPU_MAX_TAPS:
        if get_op_impl() == "compiled":
            raise CompiledKernelUnavailable(
                f"the compiled implementation was requested but the CPU kernel is compiled for at most "
                f"{CPU_MAX_TAPS} taps, got {taps}; 'auto' runs the PyTorch implementation"
            )
        return None
    return select_extension(KERNELS, frame.device)


def _compiled_forward(module: ModuleType, frame: Tensor, vertical: Tensor, horizontal: Tensor) -> Tensor:
    dtype = compute_dtype(frame.dtype)
    out = module.forward(frame.to(dtype), vertical.to(dtype), horizontal.to(dtype))
    return out.to(frame.dtype)


def _compiled_backward(
    module: ModuleType,
    grad_out: Tensor,
    frame: Tensor,
    vertical: Tensor,
    horizontal: Tensor,
    output_mask: Sequence[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    dtype = compute_dtype(frame.dtype)
    grads = module.backward(
        grad_out.to(dtype), frame.to(dtype), vertical.to(dtype), horizontal.to(dtype), [bool(m) for m in output_mask]
    )
    return tuple(g.to(frame.dtype) for g in grads)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------
# Custom ops: one opaque node for torch.compile, autograd and autocast
# ---------------------------------------------------------------------------------


@torch.library.custom_op("sepconv::separable_conv", mutates_args=())
def _separable_conv_op(frame: Tensor, vertical: Tensor, horizontal: Tensor) -> Tensor:
    _check_inputs(frame, vertical, horizontal)
    module = _forward_extension(frame, vertical.shape[1])
    if module is None:
        return separable_conv_reference(frame, vertical, horizontal)
    return _compiled_forward(module, frame, vertical, horizontal)


@_separable_conv_op.register_fake
def _separable_conv_fake(frame: Tensor, vertical: Tensor, horizontal: Tensor) -> Tensor:
    _check_inputs(frame, vertical, horizontal)
    batch, channels = frame.shape[:2]
    height, width = vertical.shape[2:]
    return frame.new_empty(batch, channels, height, width)


@torch.library.custom_op("sepconv::separable_conv_backward", mutates_args=())
def _separable_conv_backward_op(
    grad_out: Tensor, frame: Tensor, vertical: Tensor, horizontal: Tensor, output_mask: list[bool]
) -> tuple[Tensor, Tensor, Tensor]:
    return separable_conv_backward_reference(grad_out, frame, vertical, horizontal, output_mask)


@_separable_conv_backward_op.register_kernel("cuda")
def _separable_conv_backward_cuda(
    grad_out: Tensor, frame: Tensor, vertical: Tensor, horizontal: Tensor, output_mask: list[bool]
) -> tuple[Tensor, Tensor, Tensor]:
    _check_inputs(frame, vertical, horizontal, "separable_conv_backward")
    module = select_extension(KERNELS, frame.device)
    if module is None:
        return separable_conv_backward_reference(grad_out, frame, vertical, horizontal, output_mask)
    return _compiled_backward(module, grad_out, frame, vertical, horizontal, output_mask)


@_separable_conv_backward_op.register_fake
def _separable_conv_backward_fake(
    grad_out: Tensor, frame: Tensor, vertical: Tensor, horizontal: Tensor, output_mask: list[bool]
) -> tuple[Tensor, Tensor, Tensor]:
    _check_inputs(frame, vertical, horizontal, "separable_conv_backward")
    return (
        torch.empty_like(frame, memory_format=torch.contiguous_format),
        torch.empty_like(vertical, memory_format=torch.contiguous_format),
        torch.empty_like(horizontal, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    frame, vertical, horizontal = ctx.saved_tensors
    mask = list(ctx.needs_input_grad[:3])
    grads = torch.ops.sepconv.separable_conv_backward(grad_out, frame, vertical, horizontal, mask)
    return tuple(g if needed else None for g, needed in zip(grads, mask))


_separable_conv_op.register_autograd(_backward, setup_context=_setup_context)

# Each output sums k*k products (2601 at k=51): accumulated in float16 or bfloat16 that
# loses about two decimal digits, so autocast runs both ops in float32.
for _device in ("cuda", "cpu"):
    torch.library.register_autocast("sepconv::separable_conv", _device, torch.float32)
    torch.library.register_autocast("sepconv::separable_conv_backward", _device, torch.float32)


def separable_conv(frame: Tensor, vertical: Tensor, horizontal: Tensor) -> Tensor:
    """Local separable convolution (SepConv): each output pixel has its own 1-D kernels.

    Args:
        frame: (B, C, H+k-1, W+k-1) input, already padded by (k-1)//2 on each side for
            odd k; any real values (SepConv feeds colours in [0, 1]).
            Any k >= 1 works; SepConv uses k = 51.
        vertical: (B, k, H, W) vertical kernel of each output pixel.
        horizontal: (B, k, H, W) horizontal kernel of each output pixel.

    Returns:
        (B, C, H, W) tensor in the inputs' dtype (float32 under autocast):
        ``out[b,c,y,x] = sum_i sum_j vertical[b,i,y,x] * horizontal[b,j,y,x] * frame[b,c,y+i,x+j]``.

    Raises:
        ValueError: wrong ranks, shapes, devices or dtypes, with the expected shapes.
        RuntimeError: ``op_impl("compiled")`` is set and no compiled kernel covers the
            call (the extension does not build, or k > CPU_MAX_TAPS on the CPU).

    Differentiable in all three inputs; works under ``torch.autocast`` and
    ``torch.compile`` (it is the opaque custom op ``torch.ops.sepconv.separable_conv``).
    """
    _check_inputs(frame, vertical, horizontal, same_dtype=not autocast_enabled(frame.device))
    return _separable_conv_op(frame, vertical, horizontal)
