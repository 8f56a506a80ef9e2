"""DSepConv (Cheng & Chen, AAAI 2020): separable kernels whose taps move.

Per output pixel and input frame the network predicts a vertical and a horizontal
n-tap kernel, an offset (Δy, Δx) for each of the n² taps and a modulation mask, and
samples the frame bilinearly at each tap's moved position. Motion is no longer bounded
by the kernel's size, so n = 5 suffices where SepConv needs 51.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sepconv_cli.ext import deformable_separable_conv
from sepconv_cli.models.blocks import KernelSubnet, UNet, check_frame_pair, deformable_kernel_sum, joint_normalisation

Stats = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DSepConvConfig:
    """Options of the DSepConv network; saved beside its weights.

    kernel_size: n, taps of each 1-D kernel (odd); the paper's 5 costs 12.8 % fewer FLOPs
        than 7 and loses little.
    channels: widths of the five U-Net levels (as SepConv).
    input_normalisation: joint mean/std normalisation of both frames (as SepConv++).
    kernel_normalisation: divide the output by Σ v·h·mask, guarded where |sum| < 0.01.
    """

    kernel_size: int = 5
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    input_normalisation: bool = True
    kernel_normalisation: bool = True

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        object.__setattr__(self, "channels", tuple(self.channels))


class DSepConv(nn.Module):
    """Predicts the middle frame of two frames with deformable separable convolutions.

    ``forward(frame1, frame2)``: (B, 3, H, W) floats in [0, 1], H and W multiples of
    ``stride``; returns (B, 3, H, W), not clamped. ``stats`` as in ``SepConv``.
    """

    name = "dsepconv"
    stride = UNet.stride

    def __init__(self, config: DSepConvConfig = DSepConvConfig()) -> None:
        super().__init__()
        self.config = config
        n = config.kernel_size
        self.unet = UNet(6, config.channels)
        c = self.unet.out_channels
        self.kernels = nn.ModuleList(KernelSubnet(c, n) for _ in range(4))  # v1, h1, v2, h2
        self.offsets = nn.ModuleList(KernelSubnet(c, n * n) for _ in range(4))  # dy1, dx1, dy2, dx2
        self.masks = nn.ModuleList(KernelSubnet(c, n * n, nn.Sigmoid()) for _ in range(2))
        for subnet in self.offsets:
            # Start from zero offsets, i.e. from plain n×n SepConv, as deformable
            # convolutions usually are: random initial offsets only scramble the taps.
            nn.init.zeros_(subnet[-1].weight)
            nn.init.zeros_(subnet[-1].bias)

    def forward(self, frame1: torch.Tensor, frame2: torch.Tensor, stats: Stats | None = None) -> torch.Tensor:
        check_frame_pair("DSepConv", self.stride, frame1, frame2)
        if self.config.input_normalisation:
            mean, std = stats if stats is not None else joint_normalisation(frame1, frame2)
            frame1, frame2 = (frame1 - mean) / std, (frame2 - mean) / std
        features = self.unet(torch.cat([frame1, frame2], 1))
        v1, h1, v2, h2 = (subnet(features) for subnet in self.kernels)
        dy1, dx1, dy2, dx2 = (subnet(features) for subnet in self.offsets)
        m1, m2 = (subnet(features) for subnet in self.masks)
        output = deformable_separable_conv(frame1, v1, h1, dy1, dx1, m1) + deformable_separable_conv(
            frame2, v2, h2, dy2, dx2, m2
        )
        if self.config.kernel_normalisation:
            weight = deformable_kernel_sum(v1, h1, m1) + deformable_kernel_sum(v2, h2, m2)
            weight = torch.where(weight.abs() < 0.01, torch.ones_like(weight), weight)
            output = output / weight
        if self.config.input_normalisation:
            output = output * std + mean
        return output
