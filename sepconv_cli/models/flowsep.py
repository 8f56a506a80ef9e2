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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepconv_cli.ext.flowsep_synthesis import SPLAT_PRIOR, flowsep_synthesis, params_per_frame
from sepconv_cli.flow import FlowPrior, flow_prior, splat
from sepconv_cli.models.blocks import check_frame_pair

# SPLAT_PRIOR, the share of the splat candidate in the untrained blend: small enough that the
# network starts at the flow baseline (< 0.01 dB away), large enough to pass a gradient.
__all__ = ["FLOW_SCALE", "SPLAT_PRIOR", "FlowSep", "FlowSepConfig", "gate"]
FLOW_SCALE = 32.0  # flows enter the network divided by this (px)


@dataclass(frozen=True)
class FlowSepConfig:
    """Options of the FlowSep network; saved beside its weights.

    kernel_size: n, taps of each 1-D kernel (odd); 3 is enough when the taps already
        follow the flow, and costs 9/25 of DSepConv's 5.
    channels: widths of the four U-Net levels (1/2, 1/4, 1/8, 1/16 resolution).
    """

    kernel_size: int = 3
    channels: tuple[int, ...] = (24, 48, 72, 96)

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if len(self.channels) != 4:
            raise ValueError(f"the U-Net has four levels, got channels={self.channels}")
        object.__setattr__(self, "channels", tuple(self.channels))


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
    is accepted for the engine's common call and unused. Returns (B, 3, H, W), not clamped.
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
        # I0, I1, W0, W1, splat (15), e0, e1, coverage, t (4), Ft0, Ft1 (4)
        self.unet = _UNet(23, config.channels)
        self.head = nn.Conv2d(config.channels[0], 2 * self.per_frame + 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        frame1: Tensor,
        frame2: Tensor,
        stats: object | None = None,
        t: float | Tensor = 0.5,
        flows: tuple[Tensor, Tensor] | None = None,
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
        # The head stays at the U-Net's half resolution: the synthesis samples it per output
        # pixel (compiled kernel) or upsamples it first (the reference composition).
        params = self.head(self.unet(features))
        return flowsep_synthesis(
            frame1, frame2, splatted, prior.ft0, prior.ft1, prior.weight0, params,
            gate(prior.t).reshape(-1), self.config.kernel_size,
        )

    def _features(self, frame1: Tensor, frame2: Tensor, prior: FlowPrior, splatted: Tensor, coverage: Tensor) -> Tensor:
        """The U-Net's 23 input channels, (B, 23, H, W), written straight into one buffer in
        the memory format of the network's weights: a torch.cat of temporaries, then the
        convolution's copy to channels_last, were two more full-size passes over 23 channels."""
        channels_last = self.head.weight.is_contiguous(memory_format=torch.channels_last)
        batch, _, height, width = frame1.shape
        features = torch.empty(
            (batch, 23, height, width), dtype=frame1.dtype, device=frame1.device,
            memory_format=torch.channels_last if channels_last else torch.contiguous_format,
        )
        for index, image in enumerate((frame1, frame2, prior.warped0, prior.warped1, splatted)):
            torch.sub(image, 0.5, out=features[:, 3 * index : 3 * index + 3])
        torch.log1p(prior.error0, out=features[:, 15:16])
        torch.log1p(prior.error1, out=features[:, 16:17])
        torch.clamp(coverage, 0, 2, out=features[:, 17:18])
        features[:, 18:19] = prior.t
        torch.div(prior.ft0, FLOW_SCALE, out=features[:, 19:21])
        torch.div(prior.ft1, FLOW_SCALE, out=features[:, 21:23])
        return features
