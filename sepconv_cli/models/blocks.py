"""The U-Net encoder-decoder shared by SepConv and DSepConv (Niklaus et al. 2017, Fig. 2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_block(c_in: int, c_out: int, layers: int = 3) -> nn.Sequential:
    """``layers`` 3×3 convolutions with ReLU, the first mapping c_in → c_out."""
    modules: list[nn.Module] = []
    for index in range(layers):
        modules += [nn.Conv2d(c_in if index == 0 else c_out, c_out, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


class Upsample(nn.Sequential):
    """Bilinear ×2 followed by a 3×3 convolution and ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Five encoder blocks with 2×2 average pooling after each, a bottleneck, and a decoder
    whose upsampled features are *added* to the encoder features of the same size.

    Input (B, c_in, H, W) with H, W multiples of 32; output (B, channels[1], H/2, W/2),
    the half-resolution features the kernel subnets read.
    """

    stride = 32

    def __init__(self, c_in: int = 6, channels: tuple[int, ...] = (32, 64, 128, 256, 512)) -> None:
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"the U-Net has five levels, got channels={channels}")
        self.encoders = nn.ModuleList()
        previous = c_in
        for width in channels:
            self.encoders.append(conv_block(previous, width))
            previous = width
        self.pool = nn.AvgPool2d(2, 2)
        # Decoder levels 5..2: each maps the sum at its level to the next level's width.
        self.decoders = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        outputs = [channels[4], channels[3], channels[2], channels[1]]
        inputs = [channels[4], *outputs[:-1]]
        for c_dec_in, c_dec_out in zip(inputs, outputs):
            self.decoders.append(conv_block(c_dec_in, c_dec_out))
            self.upsamplers.append(Upsample(c_dec_out))
        self.out_channels = channels[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x if not skips else self.pool(x))
            skips.append(x)
        x = self.pool(x)
        for decoder, upsample, skip in zip(self.decoders, self.upsamplers, reversed(skips[1:])):
            x = upsample(decoder(x)) + skip
        return x


class KernelSubnet(nn.Sequential):
    """Three 3×3 conv+ReLU at half resolution, bilinear ×2, a final 3×3 conv (no activation)."""

    def __init__(self, c_in: int, c_out: int, activation: nn.Module | None = None) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_in, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_in, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        ]
        if activation is not None:
            layers.append(activation)
        super().__init__(*layers)


def deformable_kernel_sum(vertical: torch.Tensor, horizontal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_ij v_i·h_j·m_ij per pixel, (B, 1, H, W): what a deformable separable convolution
    gives for an all-ones frame. ``vertical``/``horizontal`` (B, n, H, W), ``mask`` (B, n², H, W)."""
    b, n, h, w = vertical.shape
    taps = vertical.unsqueeze(2) * horizontal.unsqueeze(1) * mask.view(b, n, n, h, w)
    return taps.sum(dim=(1, 2)).unsqueeze(1)


def joint_normalisation(frame1: torch.Tensor, frame2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std over both frames (SepConv++ §3.2), shapes (B, C, 1, 1)."""
    both = torch.cat([frame1, frame2], dim=3)
    mean = both.mean(dim=(2, 3), keepdim=True)
    std = both.std(dim=(2, 3), keepdim=True).clamp_min(1e-2)
    return mean, std


def check_frame_pair(model: str, stride: int, frame1: torch.Tensor, frame2: torch.Tensor) -> None:
    """A readable error for frames a network cannot take (the engine pads; direct callers may not)."""
    height, width = frame1.shape[-2:]
    if frame1.shape != frame2.shape or height % stride or width % stride:
        raise ValueError(
            f"{model} needs two frames of the same size with sides divisible by {stride}, "
            f"got {tuple(frame1.shape)} and {tuple(frame2.shape)}"
        )


def replicate_pad(frame: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(frame, [pad, pad, pad, pad], mode="replicate")
