"""Image quality metrics, shared by ``train`` (validation, SSIM loss) and ``eval``.

Both work on float tensors and are differentiable, so SSIM doubles as a loss. For
scores comparable with published ones, ``eval`` rounds predictions to 8 bits first and
passes ``data_range=255`` on 0-255 values (see the README's "How scores are computed").
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per sample of (B, C, H, W) inputs.

    The mean squared error is taken over all channels and pixels; identical images give
    ``inf``.
    """
    mse = (prediction.double() - target.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).to(prediction.dtype if prediction.is_floating_point() else torch.float64)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-(x**2) / (2 * sigma**2))
    return window / window.sum()


def ssim(
    prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), one value per sample of (B, C, H, W) inputs.

    Gaussian window (11 taps, σ = 1.5), K1 = 0.01, K2 = 0.03, computed per channel over
    the 'valid' positions (no padding) and averaged over channels and positions, as
    scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(prediction.shape)} and {tuple(target.shape)}")
    if min(prediction.shape[-2:]) < window:
        raise ValueError(f"images of {tuple(prediction.shape[-2:])} are smaller than the {window}-px SSIM window")
    dtype = prediction.dtype if prediction.is_floating_point() else torch.float64
    x, y = prediction.to(dtype), target.to(dtype)
    channels = x.shape[1]
    g = gaussian_window(window, sigma, dtype).to(x.device)
    vertical = g.view(1, 1, window, 1).expand(channels, 1, window, 1)
    horizontal = g.view(1, 1, 1, window).expand(channels, 1, 1, window)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(image, vertical, groups=channels), horizontal, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sigma_x = blur(x * x) - mu_x**2
    sigma_y = blur(y * y) - mu_y**2
    sigma_xy = blur(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return score.flatten(1).mean(1)
