"""SepConv (Niklaus, Mai, Liu, CVPR 2017) with the SepConv++ refinements that cost
nothing at run time (Niklaus, Mai, Wang, WACV 2021) as options."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sepconv_cli.ext import separable_conv
from sepconv_cli.models.blocks import KernelSubnet, UNet, check_frame_pair, joint_normalisation, replicate_pad

Stats = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SepConvConfig:
    """Options of the SepConv network; saved beside its weights.

    kernel_size: taps of each 1-D kernel (odd); motion up to about ±kernel_size/2 px.
    channels: widths of the five U-Net levels.
    delayed_padding: the U-Net sees the unpadded frames and only the local convolution
        reads padded ones (SepConv++, +0.37 dB); off, the U-Net sees frames padded by the
        kernel radius rounded up to 16 px, as in the 2017 network.
    input_normalisation: subtract the joint mean, divide by the joint std of both
        frames, undo at the output (SepConv++, +0.30 dB).
    kernel_normalisation: divide the output by the sum of the kernel weights, guarded
        where |sum| < 0.01 (SepConv++, +0.52 dB).
    """

    kernel_size: int = 51
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    delayed_padding: bool = True
    input_normalisation: bool = True
    kernel_normalisation: bool = True

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        object.__setattr__(self, "channels", tuple(self.channels))


# The configuration of the 2017 paper, for comparisons.
PAPER_CONFIG = SepConvConfig(delayed_padding=False, input_normalisation=False, kernel_normalisation=False)


class SepConv(nn.Module):
    """Predicts the middle frame of two frames.

    ``forward(frame1, frame2)``: (B, 3, H, W) float tensors in [0, 1], H and W multiples
    of ``stride``; returns (B, 3, H, W), not clamped (training sees the raw values).
    ``stats`` overrides the input-normalisation mean and std, each (B, 3, 1, 1), so a
    tiled caller can normalise every tile with the statistics of the whole frame.
    """

    name = "sepconv"
    stride = UNet.stride

    def __init__(self, config: SepConvConfig = SepConvConfig()) -> None:
        super().__init__()
        self.config = config
        k = config.kernel_size
        self.unet = UNet(6, config.channels)
        c = self.unet.out_channels
        self.vertical1, self.horizontal1 = KernelSubnet(c, k), KernelSubnet(c, k)
        self.vertical2, self.horizontal2 = KernelSubnet(c, k), KernelSubnet(c, k)

    def forward(self, frame1: torch.Tensor, frame2: torch.Tensor, stats: Stats | None = None) -> torch.Tensor:
        config = self.config
        check_frame_pair("SepConv", self.stride, frame1, frame2)
        if config.input_normalisation:
            mean, std = stats if stats is not None else joint_normalisation(frame1, frame2)
            frame1, frame2 = (frame1 - mean) / std, (frame2 - mean) / std

        radius = config.kernel_size // 2
        if config.delayed_padding:
            features = self.unet(torch.cat([frame1, frame2], 1))
            crop = slice(None)
        else:
            # Pad to a multiple of 16 px a side so the padded input still divides by 32.
            context = -(-radius // 16) * 16
            features = self.unet(replicate_pad(torch.cat([frame1, frame2], 1), context))
            crop = slice(context, -context) if context else slice(None)

        kernels = [
            subnet(features)[..., crop, crop]
            for subnet in (self.vertical1, self.horizontal1, self.vertical2, self.horizontal2)
        ]
        v1, h1, v2, h2 = kernels
        output = separable_conv(replicate_pad(frame1, radius), v1, h1) + separable_conv(
            replicate_pad(frame2, radius), v2, h2
        )
        if config.kernel_normalisation:
            # The sum of a separable kernel is the product of its 1-D sums: the same as
            # convolving an all-ones channel, without a third pass.
            weight = (v1.sum(1) * h1.sum(1) + v2.sum(1) * h2.sum(1)).unsqueeze(1)
            weight = torch.where(weight.abs() < 0.01, torch.ones_like(weight), weight)
            output = output / weight
        if config.input_normalisation:
            output = output * std + mean
        return output
