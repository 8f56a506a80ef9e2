"""``metrics.psnr``/``metrics.ssim``, their 8-bit frame versions ``frame_psnr``/``frame_ssim``
and ``evaluation.score`` against independent values: numbers worked out by hand, a
plain-numpy SSIM written from the paper's formula, and scikit-image (skipped when it is
not installed). ``frame_ssim`` computes in float32, so it is held to 1e-4 (it is within
~1e-6 on every case here) rather than to 1e-10."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sepconv_cli.evaluation import PSNR_CAP, score
from sepconv_cli.metrics import frame_psnr, frame_ssim, psnr, ssim
from tests.media import texture

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
FLOAT32_SSIM = 1e-4  # how far frame_ssim (float32) may be from a float64 SSIM


def nchw(*images: np.ndarray) -> torch.Tensor:
    """(H, W, C) arrays → one (N, C, H, W) tensor, values and dtype kept."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def distorted(image: np.ndarray, seed: int, amplitude: int = 25) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, image.shape)
    return np.clip(image.astype(np.int64) + noise, 0, 255).astype(np.uint8)


# --- PSNR ------------------------------------------------------------------------------------


def test_psnr_by_hand() -> None:
    target = np.zeros((2, 2, 1), np.uint8)
    prediction = target.copy()
    prediction[1, 1, 0] = 10  # MSE = 100 / 4 = 25
    assert float(psnr(nchw(prediction), nchw(target), data_range=255)) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    assert float(psnr(nchw(prediction), nchw(target), data_range=255)) == pytest.approx(34.151403521, abs=1e-8)


def test_psnr_averages_over_channels_and_pixels_per_sample() -> None:
    target = np.full((2, 3, 3), 100, np.uint8)
    one = target.copy()
    one[0, 0, 2] = 112  # MSE = 144 / 18 = 8
    two = target + 3  # MSE = 9
    values = psnr(nchw(one, two), nchw(target, target), data_range=255)
    assert values.shape == (2,)
    assert values.tolist() == pytest.approx([10 * math.log10(255**2 / 8), 10 * math.log10(255**2 / 9)], abs=1e-12)


def test_psnr_of_identical_images_is_inf_and_score_caps_it() -> None:
    image = texture(0, 16, 12)
    assert math.isinf(float(psnr(nchw(image), nchw(image), data_range=255)))
    assert score(image, image) == (PSNR_CAP, 1.0)  # exactly: frame_ssim's ratios are a/a


# --- SSIM ------------------------------------------------------------------------------------


def numpy_ssim(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al.'s SSIM written out with loops over window positions and channels."""
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    weights = np.outer(g, g) / np.outer(g, g).sum()
    x, y = x.astype(np.float64), y.astype(np.float64)
    height, width, channels = x.shape
    values = []
    for c in range(channels):
        for top in range(height - size + 1):
            for left in range(width - size + 1):
                a = x[top : top + size, left : left + size, c]
                b = y[top : top + size, left : left + size, c]
                mu_a, mu_b = (weights * a).sum(), (weights * b).sum()
                var_a = (weights * (a - mu_a) ** 2).sum()
                var_b = (weights * (b - mu_b) ** 2).sum()
                cov = (weights * (a - mu_a) * (b - mu_b)).sum()
                values.append(((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2)))
    return float(np.mean(values))


def test_ssim_of_two_flat_images_by_hand() -> None:
    # No variance: SSIM = (2·μx·μy + C1) / (μx² + μy² + C1) · C2 / C2.
    x = np.full((11, 11, 1), 100, np.uint8)
    y = np.full((11, 11, 1), 110, np.uint8)
    expected = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)
    assert float(ssim(nchw(x), nchw(y), data_range=255)) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(1 - 100 / 22106.5025, abs=1e-12)
    assert expected == pytest.approx(0.9954764441, abs=1e-10)


def test_ssim_matches_a_loop_reference_on_small_images() -> None:
    image = texture(3, 15, 13)
    other = distorted(image, seed=1)
    assert float(ssim(nchw(other), nchw(image), data_range=255)) == pytest.approx(numpy_ssim(other, image), abs=1e-10)
    # A contrast change alone keeps the means close and lowers only the structure term.
    flatter = (128 + (image.astype(np.int64) - 128) // 2).astype(np.uint8)
    assert float(ssim(nchw(flatter), nchw(image), data_range=255)) == pytest.approx(numpy_ssim(flatter, image), abs=1e-10)


def test_ssim_is_one_for_identical_images_and_refuses_tiny_ones() -> None:
    image = texture(0, 20, 16)
    assert float(ssim(nchw(image), nchw(image), data_range=255)) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(nchw(image[:10]), nchw(image[:10]), data_range=255)


# --- scikit-image ----------------------------------------------------------------------------


@pytest.mark.parametrize("height,width,seed", [(48, 64, 0), (37, 41, 1), (11, 11, 2)])
def test_metrics_match_scikit_image(height: int, width: int, seed: int) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    truth = texture(seed, width, height)
    prediction = distorted(truth, seed)
    expected_ssim = metrics.structural_similarity(
        prediction, truth, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
    )
    expected_psnr = metrics.peak_signal_noise_ratio(truth, prediction, data_range=255)
    assert float(ssim(nchw(prediction), nchw(truth), data_range=255)) == pytest.approx(expected_ssim, abs=1e-10)
    assert float(psnr(nchw(prediction), nchw(truth), data_range=255)) == pytest.approx(expected_psnr, abs=1e-10)
    assert score(prediction, truth) == (pytest.approx(expected_psnr, abs=1e-10), pytest.approx(expected_ssim, abs=FLOAT32_SSIM))


def test_score_refuses_unrounded_predictions() -> None:
    truth = texture(0, 16, 12)
    with pytest.raises(ValueError, match="8-bit"):
        score(truth.astype(np.float32), truth)


# --- frame_ssim / frame_psnr: the fast 8-bit path that ``eval`` scores with ---------------


def noisy(image: np.ndarray, seed: int, amplitude: int) -> np.ndarray:
    return distorted(image, seed, amplitude)


def frame_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs that stress float32: unrelated noise, near-identical frames, bright flat
    areas (large squares), a hard black/white edge (the largest variances a frame can
    have), opposite constants, grey frames, odd sizes and a 576p-sized frame."""
    rng = np.random.default_rng(7)
    pairs = {}
    for height, width in ((11, 11), (37, 41), (13, 200), (576, 720)):
        tag = f"{height}x{width}"
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pairs[f"noise-{tag}"] = (noise, rng.integers(0, 256, noise.shape, dtype=np.uint8))
        pairs[f"slightly-off-{tag}"] = (noise, noisy(noise, 1, 3))
        pan = texture(3, width, height)
        pairs[f"pan-{tag}"] = (texture(5, width, height), pan)
        pairs[f"bright-{tag}"] = (np.full_like(pan, 250) + (pan % 5), np.full_like(pan, 251) + (pan % 3))
        edge = np.zeros((height, width, 3), np.uint8)
        edge[:, width // 2 :] = 255
        pairs[f"edge-{tag}"] = (noisy(edge, 2, 2), edge)
        pairs[f"grey-edge-{tag}"] = (noisy(edge, 3, 2)[:, :, 0], edge[:, :, 0])
    pairs["white-vs-black"] = (np.full((16, 16, 3), 255, np.uint8), np.zeros((16, 16, 3), np.uint8))
    pan = texture(0, 30, 20)
    pairs["one-channel"] = (noisy(pan, 4, 9)[:, :, :1], pan[:, :, :1])
    rgba = np.concatenate([pan, pan[:, :, :1]], axis=2)
    pairs["four-channels"] = (noisy(rgba, 5, 9), rgba)
    return pairs


PAIRS = frame_pairs()


def skimage_ssim(prediction: np.ndarray, truth: np.ndarray) -> float:
    metrics = pytest.importorskip("skimage.metrics")
    return float(metrics.structural_similarity(
        prediction, truth, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=-1 if prediction.ndim == 3 else None,
    ))


@pytest.mark.parametrize("name", list(PAIRS))
def test_frame_ssim_matches_scikit_image(name: str) -> None:
    prediction, truth = PAIRS[name]
    assert frame_ssim(prediction, truth) == pytest.approx(skimage_ssim(prediction, truth), abs=FLOAT32_SSIM)


@pytest.mark.parametrize("name", [n for n in PAIRS if not n.endswith("576x720")])
def test_frame_ssim_equals_ssim_and_frame_psnr_equals_psnr(name: str) -> None:
    prediction, truth = PAIRS[name]
    p, t = (nchw(a if a.ndim == 3 else a[:, :, None]) for a in (prediction, truth))
    assert frame_ssim(prediction, truth) == pytest.approx(float(ssim(p, t, data_range=255)), abs=FLOAT32_SSIM)
    assert frame_psnr(prediction, truth) == pytest.approx(float(psnr(p, t, data_range=255)), abs=1e-10)


def test_frame_ssim_keeps_the_hand_and_loop_values_of_ssim() -> None:
    # The cases ``ssim`` is pinned to above, by hand and against the loop reference.
    x = np.full((11, 11, 1), 100, np.uint8)
    y = np.full((11, 11, 1), 110, np.uint8)
    assert frame_ssim(x, y) == pytest.approx(0.9954764441, abs=1e-7)
    image = texture(3, 15, 13)
    other = distorted(image, seed=1)
    assert frame_ssim(other, image) == pytest.approx(numpy_ssim(other, image), abs=FLOAT32_SSIM)
    flatter = (128 + (image.astype(np.int64) - 128) // 2).astype(np.uint8)
    assert frame_ssim(flatter, image) == pytest.approx(numpy_ssim(flatter, image), abs=FLOAT32_SSIM)
    odd = texture(1, 23, 17)
    assert frame_ssim(odd, odd[:, :, ::-1].copy()) == pytest.approx(numpy_ssim(odd, odd[:, :, ::-1]), abs=FLOAT32_SSIM)


def test_frame_ssim_is_exactly_one_for_identical_frames_and_symmetric() -> None:
    for prediction, truth in (PAIRS["pan-37x41"], PAIRS["edge-576x720"]):
        assert frame_ssim(truth, truth.copy()) == 1.0
        assert frame_ssim(prediction, truth) == pytest.approx(frame_ssim(truth, prediction), abs=1e-7)
    # Views (a crop, a channel flip) are scored like the copies they stand for.
    image, other = PAIRS["pan-37x41"]
    assert frame_ssim(image[2:-3, 1:], other[2:-3, 1:]) == pytest.approx(
        frame_ssim(image[2:-3, 1:].copy(), other[2:-3, 1:].copy()), abs=1e-12)
    assert frame_psnr(image[:, ::-1], other[:, ::-1]) == pytest.approx(frame_psnr(image, other), abs=1e-12)


def test_frame_metrics_refuse_what_they_cannot_score() -> None:
    image = texture(0, 20, 16)
    assert math.isinf(frame_psnr(image, image))
    with pytest.raises(ValueError, match="8-bit"):
        frame_ssim(image.astype(np.float32), image.astype(np.float32))
    with pytest.raises(ValueError, match="8-bit"):
        frame_psnr(image.astype(np.uint16), image.astype(np.uint16))
    with pytest.raises(ValueError, match="of one shape"):
        frame_ssim(image, image[:, :-1])
    with pytest.raises(ValueError, match="of one shape"):
        frame_psnr(np.zeros((16, 16, 5), np.uint8), np.zeros((16, 16, 5), np.uint8))
    with pytest.raises(ValueError, match="smaller than"):
        frame_ssim(image[:10], image[:10])
    with pytest.raises(ValueError, match="odd size"):
        frame_ssim(image, image, window=10)
