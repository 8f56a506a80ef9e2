"""``Interpolator``: runs a network on frames of any size, on any device.

The networks need sides divisible by their stride (32) and memory grows with the
frame; this wraps them with replicate padding to the stride, batching of frame pairs,
mixed precision, and tiling with overlapping context, so memory is bounded by the tile
size rather than the frame size. The model never sees any of this.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from sepconv_cli.errors import DeviceError
from sepconv_cli.ext import op_impl as use_op_impl
from sepconv_cli.ext.separable_conv import CompiledKernelUnavailable
from sepconv_cli.flow import BatchGreys, FlowMemo, Grey, Neighbours, Surroundings
from sepconv_cli.flow import greys as to_greys
from sepconv_cli.models.blocks import joint_normalisation
from sepconv_cli.neighbourhood import Upcoming

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# The README section that says how to get a GPU seen (tests hold it to an existing heading).
GPU_SECTION = "On a GPU"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → the first CUDA GPU if there is one, else the CPU; ``cuda[:N]`` must exist."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device '{device}' (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {device} was asked for, but PyTorch sees no CUDA GPU (README.md, section "
                f"'{GPU_SECTION}': a CUDA build of PyTorch and an NVIDIA driver)"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"there is no {resolved}: {torch.cuda.device_count()} CUDA GPU(s) visible")
    elif resolved.type != "cpu":
        raise DeviceError(f"unsupported device '{device}' (use auto, cpu, cuda or cuda:N)")
    return resolved


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX).

    Without it bf16 convolutions are emulated: on an AVX2 AMD EPYC they ran at 0.5 GFLOP/s
    against 88 in fp32 (docs/performance.md).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: assume it is
        return True


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """``auto``: bf16 on a CPU that runs it natively, fp32 everywhere else.

    On the 2-core AVX512-BF16 EPYC of docs/performance.md bf16 scored opencv-doc's 564
    frames within 0.004 dB of fp32 frame by frame (the kernels and the taps' moves stay in
    fp32) and made the 720p network 1.29x faster, the stream only 1.07x; GPUs keep fp32
    until bf16 is measured there.
    """
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


@dataclass(frozen=True)
class Tiling:
    """How frames are cut into tiles.

    tile: side of a tile's core, in pixels (rounded up to the stride); 0 never tiles.
    context: pixels of real neighbouring content added around each core (rounded up to
        the stride) so the network sees what lies beyond it; only the core is kept. It
        must be at least the kernel radius; more makes tiled output closer to untiled.
    max_pixels: frames of at most this many (padded) pixels run whole; larger ones are
        tiled. The defaults run 1080p whole and keep SepConv's peak memory near 2.5 GB in
        fp32 at any size (measured: 1080p whole and 4K in 12 tiles, docs/performance.md);
        smaller tiles save memory but repeat more context (512 px tiles cost 1.3x the time
        of 1024 px ones at 4K).
    """

    tile: int = 1024
    context: int = 96
    max_pixels: int = 1920 * 1088


class Interpolator:
    """Predicts in-between frames with ``model`` on ``device``.

    ``midpoint(frame1, frame2)`` takes (N, 3, H, W) float tensors in [0, 1] on any
    device, of any H, W, and returns (N, 3, H, W) float32 in [0, 1] on the CPU.
    ``at(frame1, frame2, t)`` does the same for any time t in [0, 1] (a float or an (N,)
    tensor) with models that take one (``any_time``); midpoint-only models refuse other t.

    Models with a flow prior (``needs_flow``, flowsep) get it computed once per pair on
    the whole frame, and tiles of it; tiles then carry enough context to cover the
    largest motion, so tiling does not cut off what a tile's pixels move to.

    ``channels_last`` stores the network's weights, and so its activations, as NHWC
    (``model`` is converted in place, as ``.to(device)`` moves it). ``None``: on for the
    CPU, where oneDNN's NHWC convolutions ran full SepConv about 30 % faster at 720p and
    DSepConv about 15 % (docs/performance.md), off on CUDA, where it is not yet measured.
    Results differ from NCHW only by float rounding (tested).

    ``prefetch`` lets a caller that knows the next frames (the streaming pipeline) have
    their DIS flows computed in a background thread while this pair's network runs
    (four-frame FlowSep; ``flow_prefetch=False`` turns it into a no-op). Outputs are the
    same with or without it; ``close`` ends that thread. An ``at`` caller that never calls
    ``prefetch`` gets no thread and every flow computed in its own. A caller that keeps each
    frame's ``Grey`` (the stream) hands them over (``greys=``), so that no frame is greyed and
    hashed again per pair, nor once more for the prefetch (``takes_greys``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        precision: Precision = "fp32",
        tiling: Tiling = Tiling(),
        op_impl: str = "auto",
        channels_last: bool | None = None,
        flow_prefetch: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
        precision = resolve_precision(precision, self.device)
        if precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError(f"{torch.cuda.get_device_name(self.device)} does not support bf16; use fp16 or fp32")
        if precision == "fp16" and self.device.type == "cpu":
            raise DeviceError("fp16 is for GPUs; on the CPU use bf16 or fp32")
        if precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                "this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 is emulated and about "
                "100x slower than fp32; use --precision fp32",
                RuntimeWarning,
                stacklevel=2,
            )
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        self.model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        self.stride = int(getattr(model, "stride", 1))
        self.tiling = tiling
        self.op_impl = op_impl
        self._memo = FlowMemo()  # four-frame motion reuses the neighbouring pairs' flows
        self.flow_prefetch = flow_prefetch
        self._pad_context = max(self._round(tiling.context), self._round(getattr(model.config, "kernel_size", 1) // 2 + 1))

    def _round(self, pixels: int) -> int:
        return -(-pixels // self.stride) * self.stride

    @property
    def any_time(self) -> bool:
        """Whether the model predicts frames at any time t, not only the midpoint."""
        return bool(getattr(self.model, "any_time", False))

    @property
    def wants_neighbours(self) -> bool:
        """Whether the model reads the frames around the pair (``Surroundings``): a quadratic FlowSep."""
        return bool(getattr(getattr(self.model, "config", None), "quadratic", False))

    @property
    def takes_greys(self) -> bool:
        """Whether ``at`` greys its frames for the flow memo (a four-frame FlowSep), and so can
        take them ready-made as ``greys``."""
        return bool(getattr(self.model, "needs_flow", False)) and self.wants_neighbours

    @property
    def prefetches(self) -> bool:
        """Whether ``prefetch`` does anything: a four-frame FlowSep (its flows go through the
        memo that the background thread fills) with ``flow_prefetch`` on."""
        return self.flow_prefetch and self.takes_greys

    def prefetch(self, upcoming: Upcoming) -> None:
        """Start the DIS flows of a later ``at(frame1, frame2, t, neighbours)`` in the
        background thread; ``upcoming()`` gives those three, or that call's ``greys``, and is
        called in that thread, so making them costs the caller nothing (None: nothing to do).
        That ``at`` takes the flows ready, waits for one still being computed and computes
        any other itself."""
        if self.prefetches:
            self._memo.prefetch(partial(_upcoming_flows, upcoming))

    def close(self) -> None:
        """End the prefetch thread (after the DIS call it is in); a later ``prefetch`` starts another."""
        self._memo.close()

    def midpoint(self, frame1: torch.Tensor, frame2: torch.Tensor, neighbours: Surroundings | None = None,
                 greys: BatchGreys | None = None) -> torch.Tensor:
        return self.at(frame1, frame2, 0.5, neighbours, greys)

    @torch.inference_mode()
    def at(self, frame1: torch.Tensor, frame2: torch.Tensor, t: float | torch.Tensor = 0.5,
           neighbours: Surroundings | None = None, greys: BatchGreys | None = None) -> torch.Tensor:
        """The frames at ``t`` between ``frame1`` and ``frame2`` (see the class). ``greys``: the
        frames' ``Grey``s, made by the caller from these very frames (``takes_greys``; else
        ignored); without them they are made here."""
        times = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        if ((times < 0) | (times > 1)).any():
            raise ValueError(f"t must lie in [0, 1], got {times.tolist()}")
        if not self.any_time and (times != 0.5).any():
            raise ValueError(f"{getattr(self.model, 'name', 'this model')} only predicts midpoints (t = 0.5)")
        if frame1.shape != frame2.shape or frame1.dim() != 4 or frame1.shape[1] != 3:
            raise ValueError(f"expected two (N, 3, H, W) batches of equal shape, got {tuple(frame1.shape)} and {tuple(frame2.shape)}")
        if frame1.shape[0] == 0:
            return torch.empty(frame1.shape, dtype=torch.float32)
        if greys is not None and not len(greys.first) == len(greys.second) == frame1.shape[0]:
            raise ValueError(f"greys has {len(greys.first)} and {len(greys.second)} rows for {frame1.shape[0]} pairs")
        pin = self.device.type == "cuda"
        frame1 = self._to_device(frame1, pin)
        frame2 = self._to_device(frame2, pin)
        height, width = frame1.shape[-2:]
        # Statistics (and the flow) of the whole frame, so every tile is treated alike.
        # (flowsep normalises nothing: its inputs are frames and flow, so it skips them)
        needs_flow = bool(getattr(self.model, "needs_flow", False))
        stats = None if needs_flow else joint_normalisation(frame1, frame2)
        extra: dict[str, object] = {}
        context = self._pad_context
        if self.any_time:
            extra["t"] = times.to(self.device).expand(frame1.shape[0]) if times.numel() == 1 else times.to(self.device)
        if needs_flow:
            if self.wants_neighbours:
                if greys is None:
                    grey1, grey2 = to_greys(frame1), to_greys(frame2)
                else:
                    grey1, grey2 = greys.first, greys.second
                f01, f10 = self._memo(grey1, grey2, self.device), self._memo(grey2, grey1, self.device)
                if neighbours is not None:
                    extra["neighbours"] = self._neighbours(frame1, grey1, grey2, neighbours, greys)
            else:
                f01, f10 = _pair_flows(frame1, frame2)
            extra["flows"] = (f01, f10)
            # Cap: beyond this a tile would be mostly context; such motion is rare and DIS unreliable there.
            reach = _flow_reach(f01, f10, extra.get("neighbours"))  # type: ignore[arg-type]
            context = max(context, self._round(min(int(math.ceil(reach)) + self._pad_context, 512)))
        pad_h, pad_w = self._round(height) - height, self._round(width) - width
        if pad_h or pad_w:
            frame1 = F.pad(frame1, [0, pad_w, 0, pad_h], mode="replicate")
            frame2 = F.pad(frame2, [0, pad_w, 0, pad_h], mode="replicate")
            if "flows" in extra:
                extra["flows"] = tuple(F.pad(f, [0, pad_w, 0, pad_h], mode="replicate") for f in extra["flows"])
            if "neighbours" in extra:
                extra["neighbours"] = extra["neighbours"].padded(pad_w, pad_h)  # type: ignore[attr-defined]
        try:
            with use_op_impl(self.op_impl):
                if self.tiling.tile and frame1.shape[-2] * frame1.shape[-1] > self.tiling.max_pixels:
                    output = self._tiled(frame1, frame2, stats, extra, context)
                else:
                    output = self._run(frame1, frame2, stats, extra)
        except CompiledKernelUnavailable as error:
            raise DeviceError(f"op implementation 'compiled': {error}") from None
        return output[..., :height, :width].clamp_(0, 1).float().cpu()

    def _neighbours(self, frame1: torch.Tensor, grey1: list[Grey], grey2: list[Grey], around: Surroundings,
                    given: BatchGreys | None) -> Neighbours:
        """Flows to the frames around the pair (rows without valid neighbours get zeros, no DIS)."""
        valid = around.valid.to(torch.bool).cpu()
        f0m = torch.zeros_like(frame1[:, :2])
        f12 = torch.zeros_like(frame1[:, :2])
        if valid.any():
            rows = valid.nonzero().flatten().tolist()
            index = torch.tensor(rows, device=frame1.device)
            if given is None:
                before, after = to_greys(around.before[rows].float()), to_greys(around.after[rows].float())
            else:
                before, after = _neighbour_greys(given, rows)
            f0m[index] = self._memo([grey1[r] for r in rows], before, self.device)
            f12[index] = self._memo([grey2[r] for r in rows], after, self.device)
        on = {"dtype": torch.float32, "device": self.device}
        mask = around.valid.to(**on)
        one = torch.ones_like(mask)  # rows without neighbours: any positive gap, the correction is off
        before = torch.where(mask > 0, around.before_gap.to(**on), one)
        after = torch.where(mask > 0, around.after_gap.to(**on), one)
        return Neighbours(f0m, f12, before, after, mask)

    def _to_device(self, frame: torch.Tensor, pin: bool) -> torch.Tensor:
        if pin and frame.device.type == "cpu":
            frame = frame.pin_memory()
        return frame.to(self.device, torch.float32, non_blocking=pin)

    def _run(self, frame1: torch.Tensor, frame2: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None,
             extra: dict[str, object]) -> torch.Tensor:
        if self.precision == "fp32":
            return self.model(frame1, frame2, stats, **extra).float()
        with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
            return self.model(frame1, frame2, stats, **extra).float()

    def _tiled(self, frame1: torch.Tensor, frame2: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None,
               extra: dict[str, object], context: int) -> torch.Tensor:
        height, width = frame1.shape[-2:]
        tile = self._round(self.tiling.tile)
        output = torch.empty(frame1.shape, dtype=torch.float32, device=self.device)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                # Tile origins and extents are multiples of the stride, so every tile
                # pools exactly the pixels the whole frame would.
                y0, y1 = max(top - context, 0), min(top + tile + context, height)
                x0, x1 = max(left - context, 0), min(left + tile + context, width)
                part = dict(extra)
                if "flows" in extra:
                    part["flows"] = tuple(f[..., y0:y1, x0:x1] for f in extra["flows"])  # type: ignore[union-attr]
                if "neighbours" in extra:
                    part["neighbours"] = extra["neighbours"].crop(y0, x0, y1 - y0, x1 - x0)  # type: ignore[attr-defined]
                result = self._run(frame1[..., y0:y1, x0:x1], frame2[..., y0:y1, x0:x1], stats, part)
                bottom, right = min(top + tile, height), min(left + tile, width)
                output[..., top:bottom, left:right] = result[..., top - y0 : bottom - y0, left - x0 : right - x0]
        return output


def _neighbour_greys(given: BatchGreys, rows: list[int]) -> tuple[list[Grey], list[Grey]]:
    """The greys of the frames before and after the pairs ``rows`` (those with valid neighbours)."""
    before, after = [given.before[r] for r in rows], [given.after[r] for r in rows]
    if any(grey is None for grey in before + after):
        raise ValueError("greys has no neighbour greys for a row whose neighbours are valid")
    return before, after  # type: ignore[return-value]  # None ruled out above


def _upcoming_flows(upcoming: Upcoming) -> list[tuple[Grey, Grey]]:
    """The flows ``at`` will ask the memo for, in its order, as (source, target) greys."""
    announced = upcoming()
    if announced is None:
        return []
    if isinstance(announced, BatchGreys):
        grey1, grey2 = announced.first, announced.second
        rows = [r for r, (b, a) in enumerate(zip(announced.before, announced.after)) if b is not None and a is not None]
        before, after = _neighbour_greys(announced, rows)
    else:
        frame1, frame2, around = announced
        # Converted as ``at`` converts them, so the greys, and the memo's keys, match.
        grey1, grey2 = to_greys(frame1.to(torch.float32)), to_greys(frame2.to(torch.float32))
        rows, before, after = [], [], []
        if around is not None:
            rows = around.valid.to(torch.bool).cpu().nonzero().flatten().tolist()
            if rows:
                before, after = to_greys(around.before[rows].float()), to_greys(around.after[rows].float())
    flows = [*zip(grey1, grey2), *zip(grey2, grey1)]
    flows += [(grey1[r], g) for r, g in zip(rows, before)] + [(grey2[r], g) for r, g in zip(rows, after)]
    return flows


def _flow_reach(f01: torch.Tensor, f10: torch.Tensor, neighbours: Neighbours | None) -> float:
    """How far (px) the synthesis may sample from a pixel: the largest pair flow, and with
    neighbours the largest quadratic correction on top, which is at most
    (|F0m|/b + |F01|)/(4(1 + b)) ≤ (2·|F0m| + |F01|)/6 for gaps b ≥ 1/2 (the engine's range)."""
    if not f01.numel():
        return 0.0
    pair = float(torch.maximum(f01.abs().amax(), f10.abs().amax()))
    if neighbours is None:
        return pair
    around = float(torch.maximum(neighbours.f0m.abs().amax(), neighbours.f12.abs().amax()))
    return pair + (2 * around + pair) / 6


def _pair_flows(frame1: torch.Tensor, frame2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``flow_prior`` of each pair, computed once for runs of identical pairs: with ``--fps``
    several new frames between the same two inputs arrive in one batch at different t."""
    from sepconv_cli.flow import flow_prior

    unique = [0]
    for i in range(1, frame1.shape[0]):
        if not (torch.equal(frame1[i], frame1[unique[-1]]) and torch.equal(frame2[i], frame2[unique[-1]])):
            unique.append(i)
    if len(unique) == frame1.shape[0]:
        return flow_prior(frame1, frame2)
    f01, f10 = flow_prior(frame1[unique], frame2[unique])
    owner = torch.zeros(frame1.shape[0], dtype=torch.long)
    for k, start in enumerate(unique):
        owner[start:] = k
    return f01[owner.to(f01.device)], f10[owner.to(f10.device)]


def count_tiles(height: int, width: int, tiling: Tiling, stride: int = 32) -> int:
    """How many tiles a frame of this size is cut into (1 when it runs whole)."""
    padded_h, padded_w = -(-height // stride) * stride, -(-width // stride) * stride
    if not tiling.tile or padded_h * padded_w <= tiling.max_pixels:
        return 1
    tile = -(-tiling.tile // stride) * stride
    return math.ceil(padded_h / tile) * math.ceil(padded_w / tile)
