"""The degradations of procedural scenes, in torch: defocus blur and JPEG-like quantisation.

Batched tensor work on (N, 3, H, W) RGB in [0, 1], so they run wherever the scenes are
rendered (the GPU when there is one); ``synthetic.SceneRenderer`` applies them per scene.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflected borders."""
    r = max(1, int(np.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


# JPEG's standard (Annex K) quantisation tables for luma and chroma.
_Q_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_Q_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def jpeg_like(x: torch.Tensor, quality: float) -> torch.Tensor:
    """JPEG's lossy step on (N, 3, H, W) RGB in [0, 1]: YCbCr, 8x8 DCT, quantise, back.

    No chroma subsampling and no entropy coding (lossless anyway); enough to produce the
    blocking and ringing a network sees in compressed footage.
    """
    dev = x.device
    n, _, h, w = x.shape
    q = quality
    scale = 5000 / q if q < 50 else 200 - 2 * q
    tables = []
    for base in (_Q_LUMA, _Q_CHROMA, _Q_CHROMA):
        t = torch.tensor(base, dtype=torch.float32, device=dev).view(8, 8)
        tables.append(((t * scale + 50) // 100).clamp(min=1))
    Q = torch.stack(tables)  # (3, 8, 8)
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                     dtype=torch.float32, device=dev)
    ycc = torch.einsum("ij,njhw->nihw", m, x * 255)
    ycc[:, 0] -= 128
    ph, pw = (-h) % 8, (-w) % 8
    ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    H, W = h + ph, w + pw
    blocks = ycc.reshape(n, 3, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (n, 3, by, bx, 8, 8)
    i = torch.arange(8, dtype=torch.float32, device=dev)
    D = torch.cos((2 * i[None, :] + 1) * i[:, None] * np.pi / 16) * torch.where(i == 0, np.sqrt(1 / 8), np.sqrt(2 / 8))[:, None]
    coef = D @ blocks @ D.T
    Qb = Q[None, :, None, None]
    coef = torch.round(coef / Qb) * Qb
    blocks = D.T @ coef @ D
    ycc = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, 3, H, W)[:, :, :h, :w]
    ycc[:, 0] += 128
    inv = torch.linalg.inv(m)
    rgb = torch.einsum("ij,njhw->nihw", inv, ycc) / 255
    return rgb.clamp(0, 1)
