"""Image quality metrics, shared by ``train`` (validation, SSIM loss) and ``eval``.

``psnr`` and ``ssim`` work on float tensors and are differentiable, so SSIM doubles as
a loss. For scores comparable with published ones, ``eval`` rounds predictions to 8
bits first and scores them on 0-255 values (see the README's "How scores are
computed") with ``frame_psnr`` and ``frame_ssim``: the same definitions for one pair of
8-bit numpy frames, computed with OpenCV (SSIM in float32, ~20x faster than ``ssim``'s
float64 convolutions on the CPU and within 1e-6 of it).
"""

from __future__ import annotations

import numpy as np
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


def _check_frames(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.dtype != np.uint8 or truth.dtype != np.uint8:
        raise ValueError(f"expected two 8-bit frames, got {prediction.dtype} and {truth.dtype}")
    # At most 4 channels: OpenCV's per-channel scalars (the centring offsets) have four.
    channels_ok = prediction.ndim == 2 or (prediction.ndim == 3 and 1 <= prediction.shape[2] <= 4)
    if prediction.shape != truth.shape or not channels_ok or prediction.size == 0:
        raise ValueError(f"expected two (H, W) or (H, W, C<=4) frames of one shape, got {prediction.shape} and {truth.shape}")


def frame_psnr(prediction: np.ndarray, truth: np.ndarray) -> float:
    """``psnr`` (``data_range=255``) of one pair of uint8 ``(H, W)`` or ``(H, W, C<=4)`` frames.

    The squared error is summed exactly (integers in OpenCV), so this equals ``psnr`` on
    the same frames; identical frames give ``inf``.
    """
    _check_frames(prediction, truth)
    import cv2

    squared = cv2.norm(np.ascontiguousarray(prediction), np.ascontiguousarray(truth), cv2.NORM_L2SQR)
    mse = squared / prediction.size
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def frame_ssim(prediction: np.ndarray, truth: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """``ssim`` (``data_range=255``) of one pair of uint8 ``(H, W)`` or ``(H, W, C<=4)`` frames.

    Same definition (Gaussian window, K1 = 0.01, K2 = 0.03, 'valid' positions, mean
    over channels and positions, as scikit-image's ``structural_similarity(...,
    gaussian_weights=True, use_sample_covariance=False, data_range=255)``), but in
    float32 with OpenCV's separable filter: at 576p about 20x faster than ``ssim``'s
    float64 ``conv2d`` on 2 cores, and within 1e-6 of it (~1e-8 on natural frames, 4e-7
    on a noisy black/white edge, the hardest case the tests try; they allow 1e-4).
    Identical frames give exactly 1.0. Returns a float in [-1, 1].
    """
    _check_frames(prediction, truth)
    if window % 2 == 0:
        raise ValueError(f"the SSIM window must have an odd size, got {window}")
    if min(prediction.shape[:2]) < window:
        raise ValueError(f"images of {prediction.shape[:2]} are smaller than the {window}-px SSIM window")
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = gaussian_window(window, sigma).numpy().astype(np.float32)
    # Variances are E[x²] - E[x]², a difference of two large numbers: in float32 on raw
    # 0..255 values it would lose ~1e-2 of a level². Centring both frames on one integer
    # per channel (their mean, rounded) is exact and shrinks the squares, so the
    # variances keep their precision; the means get the offset back for the luminance term.
    offset = tuple(float(round((p + t) / 2)) for p, t in zip(cv2.mean(prediction), cv2.mean(truth)))
    x = cv2.subtract(np.ascontiguousarray(prediction), offset, dtype=cv2.CV_32F)
    y = cv2.subtract(np.ascontiguousarray(truth), offset, dtype=cv2.CV_32F)

    def blur(image: np.ndarray) -> np.ndarray:
        # Borders are filtered too (reflected) but cropped below, where the window fits.
        return cv2.sepFilter2D(image, -1, g, g)

    # In-place arithmetic on a few full-frame buffers: at 576p each fresh array costs
    # about as much as the operation itself. The terms are rearranged so that identical
    # frames give exactly 1 (every ratio is a/a), with the same precision:
    #   2·μx·μy + C1  = (μx² + μy² + C1) - (μx - μy)²
    #   2·σxy + C2    = (σx² + σy² + C2) - σ(x-y)²,  σ(x-y)² = E[(x-y)²] - (μx - μy)²
    mu_x, mu_y = blur(x), blur(y)
    scratch = np.square(x)
    variances = blur(scratch)                                # E[x²] + E[y²] - μx² - μy²
    variances += blur(np.square(y, out=scratch))
    variances -= np.square(mu_x, out=scratch)
    variances -= np.square(mu_y, out=scratch)
    variances += c2
    difference = np.subtract(x, y, out=x)                    # exact: integers
    structure = blur(np.square(difference, out=scratch))     # E[(x-y)²] ...
    mean_gap = np.square(np.subtract(mu_x, mu_y, out=y), out=y)
    structure -= mean_gap                                    # ... - (μx - μy)²
    np.subtract(variances, structure, out=structure)
    structure /= variances
    mu_x = cv2.add(mu_x, offset, dst=mu_x)
    mu_y = cv2.add(mu_y, offset, dst=mu_y)
    luminance = np.square(mu_x, out=mu_x)
    luminance += np.square(mu_y, out=mu_y)
    luminance += c1
    similarity = np.subtract(luminance, mean_gap, out=mean_gap)
    similarity /= luminance
    similarity *= structure
    r = window // 2
    valid = similarity[r : similarity.shape[0] - r, r : similarity.shape[1] - r]
    channels = 1 if prediction.ndim == 2 else prediction.shape[2]
    # Summed in float64 (per channel) and divided once, so that all-ones average to 1.0.
    return float(sum(cv2.sumElems(valid)[:channels]) / (valid.shape[0] * valid.shape[1] * channels))
