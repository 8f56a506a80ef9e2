"""FlowSep: deformable separable kernels steered by OpenCV optical flow, at any time t.

The default model. DSepConv's taps move by offsets a network predicts from scratch; here
every tap's offset starts from the DIS flow scaled to time t (``sepconv_cli.flow``), so a
small network only learns what flow gets wrong: a residual offset per tap, per-pixel
n×n separable kernels and modulation masks, and how to blend the two compensated frames
with a third candidate, both frames splatted forward, where backward warping fails
(occlusions, thin moving objects).

    C0 = dsc(I0; v0, h0, m0, Ft0 + Δ0) / Σ v0·h0·m0       (likewise C1 from I1)
    out = softmax(prior logits + Δlogits) · [C0, C1, splat]

The heads are zero-initialised and the kernel starts as a one-hot centre tap, so the
untrained network *is* the flow baseline (``eval --method flow``), up to the splat
candidate's 1e-3 share: training can only start from there. Every learned residual is
scaled by ``gate(t) = min(1, 8·t·(1-t))``, so t = 0 and t = 1 return the inputs exactly.

The network is a 4-level U-Net working at half resolution and below (stride 16), small
enough to train and run on a CPU.

With ``quadratic=True`` the network also sees a second motion candidate from four frames
(Xu et al., NeurIPS 2019, ``flow.quadratic_flows``): the frames before and after the pair
give each pixel an acceleration, and the quadratic flows' warped frames and their
difference from the linear flows enter the U-Net as 11 more channels (the last one says
whether the neighbours exist). Two more head channels, α0 and α1, choose per pixel how
far each frame's taps move from the linear towards the quadratic flow: they are added to
the taps' offset residuals at the head's resolution, so the fused synthesis op stays as
it is and differentiates them. New input weights and the two new head channels start at
zero (``widen_state_dict``), so a quadratic network made from linear weights first
computes exactly what they did. Without neighbours (the ends of a video, shot cuts) the
quadratic candidate is the linear one and α has nothing to move.

With ``hedge=True`` two more head channels, β0 and β1 in [-0.5, 1] (after α when both are
on), move each frame's taps by β_f·(-Ft_f), the same way α moves them: β_f = 1 puts frame
f's taps back on the unwarped pixel. Where DIS fails outright (a hand sweeping fast across
swaying foliage) warping smears the background, and the plain blend of the two unwarped
frames scored 0.01-0.027 better SSIM a frame; β lets the network fall back to it per pixel.
Its head channels start at zero too, so a hedging network grown from any weights first
computes exactly what they did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepconv_cli.ext.flowsep_synthesis import SPLAT_PRIOR, flowsep_synthesis, params_per_frame
from sepconv_cli.flow import FlowPrior, Neighbours, flow_prior, quadratic_flows, splat, warp
from sepconv_cli.models.blocks import check_frame_pair

# SPLAT_PRIOR, the share of the splat candidate in the untrained blend: small enough that the
# network starts at the flow baseline (< 0.01 dB away), large enough to pass a gradient.
__all__ = ["FLOW_SCALE", "SPLAT_PRIOR", "FlowSep", "FlowSepConfig", "gate", "head_layout", "widen_state_dict"]
FLOW_SCALE = 32.0  # flows enter the network divided by this (px)
LINEAR_CHANNELS = 23  # I0, I1, W0, W1, splat (15), e0, e1, coverage, t (4), Ft0, Ft1 (4)
QUADRATIC_CHANNELS = 11  # W0q, W1q (6), Ft0q - Ft0, Ft1q - Ft1 (4), neighbours valid (1)
ALPHA_RANGE = (-1.0, 2.0)  # how far the taps may move along (quadratic - linear): some extrapolation, no runaway
# α multiplies a displacement of several pixels, so a head weight's step moved the output
# Δ times as far through α as through a tap's own offset: at Adam's lr 2e-4 that path
# blew the network up within 200 steps. Scaling the head's α by 1/8 evens the two out.
ALPHA_SCALE = 0.125
# β multiplies a displacement of many pixels too (the whole flow, not a difference of two),
# so its head channel is scaled down the same way. Its range reaches below 0 (taps up to
# 1.5× the flow along it) so that a grown head, which starts at β = 0 exactly, is not
# clamped dead by its first step down.
BETA_SCALE = 0.125
BETA_RANGE = (-0.5, 1.0)


@dataclass(frozen=True)
class FlowSepConfig:
    """Options of the FlowSep network; saved beside its weights.

    kernel_size: n, taps of each 1-D kernel (odd); 3 is enough when the taps already
        follow the flow, and costs 9/25 of DSepConv's 5.
    channels: widths of the four U-Net levels (1/2, 1/4, 1/8, 1/16 resolution).

    quadratic: the four-frame motion candidate (see the module docstring).
    hedge: per-pixel weights β that pull each frame's taps back towards zero motion, so the
        network can fall back to blending the unwarped frames where DIS flow fails.
    """

    kernel_size: int = 3
    channels: tuple[int, ...] = (24, 48, 72, 96)
    quadratic: bool = False
    hedge: bool = False

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if len(self.channels) != 4:
            raise ValueError(f"the U-Net has four levels, got channels={self.channels}")
        object.__setattr__(self, "channels", tuple(self.channels))


def head_layout(taps: int, quadratic: bool, hedge: bool) -> dict[str, slice]:
    """Which of the head's output channels are what: ``synthesis`` (the fused op's 2k + 3),
    then ``alpha`` (quadratic) and ``beta`` (hedge), two each, in that order. New options
    go at the end, so weights grown by zero-padding keep every old channel in its place."""
    layout = {"synthesis": slice(0, 2 * params_per_frame(taps) + 3)}
    for name, present in (("alpha", quadratic), ("beta", hedge)):
        if present:
            layout[name] = slice(_width(layout), _width(layout) + 2)
    return layout


def _width(layout: dict[str, slice]) -> int:
    """The number of head channels ``layout`` describes."""
    return max(rows.stop for rows in layout.values())


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class _UNet(nn.Module):
    """Full-resolution input → half-resolution features (channels[0]); sides multiples of 16."""

    def __init__(self, c_in: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        previous = c_in
        for width in channels:
            self.down.append(nn.Sequential(_conv(previous, width, 2), _conv(width, width)))
            previous = width
        self.up = nn.ModuleList(_conv(channels[k + 1] + channels[k], channels[k]) for k in reversed(range(3)))

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return x


def gate(t: Tensor) -> Tensor:
    """How much of the learned residuals is used at time t: 0 at t = 0 and 1, 1 on [0.15, 0.85]."""
    return (8 * t * (1 - t)).clamp(0, 1)


class FlowSep(nn.Module):
    """Predicts the frame at time ``t`` between two frames.

    ``forward(frame1, frame2, stats=None, t=0.5, flows=None)``: frames (B, 3, H, W) floats
    in [0, 1], H and W multiples of ``stride``; ``t`` a float or a (B,) tensor in [0, 1];
    ``flows`` the (F01, F10) pair of ``sepconv_cli.flow.flow_prior`` (computed here when
    None; the engine computes it once on whole frames and passes tiles of it). ``stats``
    is accepted for the engine's common call and unused. ``neighbours``: the flows to the
    frames before and after the pair (``flow.Neighbours``), read by a quadratic network
    only (None: linear motion). Returns (B, 3, H, W), not clamped.
    """

    name = "flowsep"
    stride = 16
    any_time = True
    needs_flow = True
    quantise_weights = False  # 1.8 MB in float32; int8 would round its sub-pixel offsets

    def __init__(self, config: FlowSepConfig = FlowSepConfig()) -> None:
        super().__init__()
        self.config = config
        n = config.kernel_size
        self.per_frame = params_per_frame(n)  # v, h, dy, dx, mask
        self.in_channels = LINEAR_CHANNELS + (QUADRATIC_CHANNELS if config.quadratic else 0)
        self.unet = _UNet(self.in_channels, config.channels)
        self.layout = head_layout(n, config.quadratic, config.hedge)
        self.head = nn.Conv2d(config.channels[0], _width(self.layout), 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        frame1: Tensor,
        frame2: Tensor,
        stats: object | None = None,
        t: float | Tensor = 0.5,
        flows: tuple[Tensor, Tensor] | None = None,
        neighbours: Neighbours | None = None,
    ) -> Tensor:
        check_frame_pair("FlowSep", self.stride, frame1, frame2)
        if flows is None:
            flows = flow_prior(frame1, frame2)
        f01, f10 = (flow.to(frame1.dtype) for flow in flows)
        with torch.no_grad():
            prior = FlowPrior(frame1, frame2, f01, f10, t)
            splatted, coverage = splat(frame1, frame2, f01, f10, prior.t)
            # Holes of the splat take the backward blend, so the candidate is defined everywhere.
            splatted = torch.where(coverage > 1e-3, splatted, prior.blend())
            features = self._features(frame1, frame2, prior, splatted, coverage)
            deltas = self._quadratic(frame1, frame2, f01, f10, prior, neighbours, features) if self.config.quadratic else None
            # β's direction at the head's resolution: each frame's whole flow, negated, so that
            # β_f = 1 cancels it and frame f's taps read the unwarped pixel.
            still: Tensor | None = None
            if self.config.hedge:
                still = torch.cat([F.avg_pool2d(prior.ft0, 2), F.avg_pool2d(prior.ft1, 2)], 1).neg_()
            features = self._in_weights_format(features)
        # The head stays at the U-Net's half resolution: the synthesis samples it per output
        # pixel (compiled kernel) or upsamples it first (the reference composition).
        params = self.head(self.unet(features))
        if deltas is not None or still is not None:
            # In float32 even under bf16 autocast: the taps move by up to the whole flow
            # (β·-Ft), tens of pixels, where bf16's 8-bit mantissa would round to 1/8 px.
            params = self._steer(params.float(), deltas, still)
        return flowsep_synthesis(
            frame1, frame2, splatted, prior.ft0, prior.ft1, prior.weight0, params,
            gate(prior.t).reshape(-1), self.config.kernel_size,
        )

    def _features(self, frame1: Tensor, frame2: Tensor, prior: FlowPrior, splatted: Tensor, coverage: Tensor) -> Tensor:
        """The U-Net's input channels, (B, C, H, W) contiguous, the 23 linear ones filled (a
        quadratic network's 11 more by ``_quadratic``), written straight into one buffer.

        Not channels_last, even for channels_last weights: there each op writing 1 to 3 of
        the 34 channels strode over every pixel of the whole buffer (3-wide inner loops, a
        cache line touched per pixel and op), twice the time of writing whole planes and
        making one transposing copy (``_in_weights_format``) at 720p."""
        batch, _, height, width = frame1.shape
        features = torch.empty((batch, self.in_channels, height, width), dtype=frame1.dtype, device=frame1.device)
        for index, image in enumerate((frame1, frame2, prior.warped0, prior.warped1, splatted)):
            torch.sub(image, 0.5, out=features[:, 3 * index : 3 * index + 3])
        torch.log1p(prior.error0, out=features[:, 15:16])
        torch.log1p(prior.error1, out=features[:, 16:17])
        torch.clamp(coverage, 0, 2, out=features[:, 17:18])
        features[:, 18:19] = prior.t
        torch.div(prior.ft0, FLOW_SCALE, out=features[:, 19:21])
        torch.div(prior.ft1, FLOW_SCALE, out=features[:, 21:23])
        return features

    def _in_weights_format(self, features: Tensor) -> Tensor:
        """``features`` in the memory format of the network's weights (the first convolution
        would otherwise make this copy itself), the contiguous buffer then freed."""
        if self.head.weight.is_contiguous(memory_format=torch.channels_last):
            return features.contiguous(memory_format=torch.channels_last)
        return features

    def _quadratic(self, frame1: Tensor, frame2: Tensor, f01: Tensor, f10: Tensor, prior: FlowPrior,
                   neighbours: Neighbours | None, features: Tensor) -> Tensor:
        """Fill the quadratic input channels; returns the half-resolution (Ft0q - Ft0, Ft1q - Ft1), (B, 4, H/2, W/2)."""
        batch = frame1.shape[0]
        if neighbours is None:
            zeros = torch.zeros_like(f01)
            neighbours = Neighbours(zeros, zeros, valid=torch.zeros(batch, device=f01.device))
        q0, q1 = quadratic_flows(f01, f10, neighbours.f0m.to(f01.dtype), neighbours.f12.to(f01.dtype), prior.t,
                                 neighbours.before, neighbours.after, neighbours.valid, prior=prior)
        delta = torch.empty(q0.shape[:1] + (4,) + q0.shape[2:], dtype=q0.dtype, device=q0.device)
        torch.sub(q0, prior.ft0, out=delta[:, :2])
        torch.sub(q1, prior.ft1, out=delta[:, 2:])
        c = LINEAR_CHANNELS
        torch.sub(warp(frame1, q0), 0.5, out=features[:, c : c + 3])
        torch.sub(warp(frame2, q1), 0.5, out=features[:, c + 3 : c + 6])
        torch.div(delta, FLOW_SCALE, out=features[:, c + 6 : c + 10])
        features[:, c + 10 : c + 11] = neighbours.valid.to(features.dtype).reshape(-1, 1, 1, 1)
        return F.avg_pool2d(delta, 2)

    def _steer(self, params: Tensor, deltas: Tensor | None, still: Tensor | None) -> Tensor:
        """The synthesis' parameters with every tap of frame f moved by α_f·(Ft_f,quadratic - Ft_f)
        (``deltas``, quadratic) plus β_f·(-Ft_f) (``still``, hedge), each (B, 4, h, w) or None.

        The shift is added at the head's resolution (where both were pooled to), so the
        synthesis upsamples it with the rest and the fused op's gradient reaches α and β.
        """
        n, k = self.config.kernel_size, self.per_frame
        moves = []  # (per-frame weights (B, 2, h, w), per-frame directions (B, 4, h, w))
        if deltas is not None:
            moves.append(((ALPHA_SCALE * params[:, self.layout["alpha"]]).clamp(*ALPHA_RANGE), deltas))
        if still is not None:
            moves.append(((BETA_SCALE * params[:, self.layout["beta"]]).clamp(*BETA_RANGE), still))
        # Added in place on the frame's dy and dx slices: building zero-padded shift maps
        # for every channel and concatenating them cost a third of a DIS call at 720p. The
        # head's own output is changed (nothing else reads it, and the convolution's backward
        # does not keep it) and a strided view of it handed on, which the synthesis reads as
        # it is: a copy of the 69 channels first took as long as the adds themselves.
        for f in range(2):
            # (B, 2, h, w): dx, dy. Summed first: each add onto the taps costs n² channels.
            move, *more = (weight[:, f : f + 1] * direction[:, 2 * f : 2 * f + 2] for weight, direction in moves)
            for other in more:
                move = move + other
            dy = f * k + 2 * n  # each frame's parameters: v (n), h (n), dy (n²), dx (n²), mask (n²)
            params[:, dy : dy + n * n] += move[:, 1:2]
            params[:, dy + n * n : dy + 2 * n * n] += move[:, 0:1]
        return params[:, self.layout["synthesis"]]


def widen_state_dict(state: dict[str, Tensor], network: FlowSep) -> dict[str, Tensor]:
    """A FlowSep's weights for a ``network`` with more options on (quadratic, hedge): the
    new input channels of the first convolution and the new head channels get zero
    weights, so the widened network computes exactly what ``state`` did until training
    moves them. The options ``state`` has are read from its shapes; its head channels are
    moved to where ``network``'s layout puts them (β of a hedging network moves past a new α)."""
    own = network.state_dict()
    widened = dict(state)
    first = "unet.down.0.0.0.weight"
    old, new = state[first], own[first]
    if old.shape != new.shape:
        grown = torch.zeros_like(new)
        grown[tuple(slice(0, size) for size in old.shape)] = old
        widened[first] = grown
    quadratic = old.shape[1] > LINEAR_CHANNELS
    channels = state["head.bias"].shape[0]
    hedge = channels > _width(head_layout(network.config.kernel_size, quadratic, False))
    layout = head_layout(network.config.kernel_size, quadratic, hedge)
    if channels != _width(layout) or not layout.keys() <= network.layout.keys():
        raise ValueError(f"a head of {channels} channels does not grow into that of {network.config}")
    for key in ("head.weight", "head.bias"):
        old, new = state[key], own[key]
        if old.shape == new.shape and layout == network.layout:
            continue
        grown = torch.zeros_like(new)
        for name, rows in layout.items():
            grown[(network.layout[name], *(slice(0, size) for size in old.shape[1:]))] = old[rows]
        widened[key] = grown
    return widened
