"""FlowSep, the default model, and the motion prior it shares with ``eval --method flow``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepconv_cli.engine import Interpolator, Tiling
from sepconv_cli.evaluation.methods import FlowInterpolation, to_uint8
from sepconv_cli.flow import FlowPrior, baseline, flow_prior, greys, intermediate_flows, splat, warp
from sepconv_cli.models.flowsep import FlowSep, FlowSepConfig, gate
from sepconv_cli.models.registry import build_model, load_weights, save_weights
from tests.media import texture

TINY = {"channels": [4, 8, 8, 8]}


@pytest.fixture(autouse=True)
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def moving_pair(height: int = 96, width: int = 128, shift: tuple[int, int] = (5, -3)) -> tuple[np.ndarray, ...]:
    """Frames 0, 1 and 2 of a texture translating by ``shift`` (dx, dy) per frame, with a
    square moving the other way over it (an occlusion), (H, W, 3) uint8 each."""
    big = texture(0, width + 40, height + 40)
    patch = texture(1, 24, 24)
    frames = []
    for k in range(3):
        dx, dy = shift[0] * k, shift[1] * k
        frame = big[20 - dy : 20 - dy + height, 20 - dx : 20 - dx + width].copy()
        x, y = 60 - 4 * k, 30 + 2 * k
        frame[y : y + 24, x : x + 24] = patch
        frames.append(frame)
    return tuple(frames)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)


def to_image(frame: torch.Tensor) -> np.ndarray:
    return to_uint8(frame[0].permute(1, 2, 0).mul(255).numpy())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def randomised(config: dict | None = None, seed: int = 0) -> FlowSep:
    """A FlowSep whose zero-initialised head is made random, so its residuals are not zero."""
    torch.manual_seed(seed)
    model = build_model("flowsep", config or TINY).eval()
    torch.nn.init.normal_(model.head.weight, std=0.05)
    torch.nn.init.normal_(model.head.bias, std=0.05)
    return model


# --------------------------------------------------------------------------------------
# The motion prior


def test_intermediate_flows_match_super_slomo_at_the_midpoint() -> None:
    f01, f10 = torch.randn(2, 2, 5, 7), torch.randn(2, 2, 5, 7)
    ft0, ft1 = intermediate_flows(f01, f10, 0.5)
    assert torch.allclose(ft0, 0.25 * (f10 - f01)) and torch.allclose(ft1, -ft0)
    ft0, ft1 = intermediate_flows(f01, f10, torch.tensor([0.0, 1.0]))
    assert torch.equal(ft0[0], torch.zeros_like(ft0[0])) and torch.allclose(ft1[0], f01[0])
    assert torch.allclose(ft0[1], f10[1]) and torch.equal(ft1[1], torch.zeros_like(ft1[1]))


def test_warp_is_backward_warping_with_replicated_edges() -> None:
    image = torch.arange(20.0).view(1, 1, 4, 5)
    flow = torch.zeros(1, 2, 4, 5)
    flow[:, 0] = 1  # sample one pixel to the right
    out = warp(image, flow)
    assert torch.allclose(out[..., :4], image[..., 1:]) and torch.allclose(out[..., 4], image[..., 4])
    flow[:, 0] = 0.25
    assert torch.allclose(warp(image, flow)[..., 0], image[..., 0] + 0.25)


def _warp_by_interleaved_grid(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``warp`` as first written: its x and y sample positions interleaved by torch.stack."""
    _, _, height, width = flow.shape
    ys = torch.arange(height, dtype=flow.dtype).view(1, height, 1)
    xs = torch.arange(width, dtype=flow.dtype).view(1, 1, width)
    gx = (xs + flow[:, 0]) * (2 / max(width - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(height - 1, 1)) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def test_warps_and_the_prior_sample_bit_for_bit_where_an_interleaved_grid_does() -> None:
    """The grids are views of x/y planes, built once per flow and shared by the prior's warps:
    the samples must not move by a bit (odd sizes: the vector loops' tails too)."""
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 37, 53), torch.rand(2, 3, 37, 53)
    f01, f10 = torch.randn(2, 2, 37, 53) * 4, torch.randn(2, 2, 37, 53) * 4
    assert torch.equal(warp(a, f01), _warp_by_interleaved_grid(a, f01))
    prior = FlowPrior(a, b, f01, f10, torch.tensor([0.3, 0.5]))
    assert torch.equal(prior.warped0, _warp_by_interleaved_grid(a, prior.ft0))
    assert torch.equal(prior.warped1, _warp_by_interleaved_grid(b, prior.ft1))
    error0 = prior.ft0 + _warp_by_interleaved_grid(f01, prior.ft0) - prior.ft1
    assert torch.equal(prior.error0, torch.hypot(error0[:, :1], error0[:, 1:]))


def test_dis_sees_opencvs_grey_of_the_rounded_frames_and_the_frames_stay_as_they_were() -> None:
    import cv2

    torch.manual_seed(0)
    frames = torch.rand(2, 3, 37, 53) * 1.2 - 0.1  # some outside [0, 1]
    frames[0, :, 0, :8] = (torch.arange(8.0) + 0.5) / 255  # halves: round-half-even
    given = frames.clone()
    expected = [
        cv2.cvtColor(np.ascontiguousarray(f.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()),
                     cv2.COLOR_RGB2GRAY)
        for f in frames
    ]
    assert all(np.array_equal(grey.image, e) for grey, e in zip(greys(frames), expected, strict=True))
    assert torch.equal(frames, given)


def test_a_flow_does_not_depend_on_what_the_thread_computed_before() -> None:
    # OpenCV's DIS instance keeps state: after a smaller image it gave other flows on a larger
    # one, so the eval's flow baseline changed with the tests run before it.
    import threading

    import cv2

    from sepconv_cli.flow import dis_flows

    def pan(height: int, width: int, seed: int, shift: int) -> np.ndarray:
        return np.roll(cv2.cvtColor(texture(seed, width, height), cv2.COLOR_RGB2GRAY), shift, axis=1)

    a, b = pan(48, 64, 0, 0), pan(48, 64, 0, 3)
    fresh = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    expected = fresh.calc(a, b, None), fresh.calc(b, a, None)
    results = []

    def after_smaller() -> None:  # a thread of its own: no DIS instance of this one's history
        dis_flows(pan(24, 32, 5, 0), pan(24, 32, 5, 2))
        results.append(dis_flows(a, b))

    worker = threading.Thread(target=after_smaller)
    worker.start()
    worker.join()
    assert all(np.array_equal(x, y) for x, y in zip(results[0], expected, strict=True))


def test_splat_moves_pixels_forward_and_leaves_holes_empty() -> None:
    torch.manual_seed(0)
    strip = torch.rand(1, 3, 6, 12, dtype=torch.float64)
    frame0, frame1 = strip[..., 2:10], strip[..., 0:8]  # content moves 2 px right
    f01 = torch.zeros(1, 2, 6, 8, dtype=torch.float64)
    f01[:, 0] = 2
    image, coverage = splat(frame0, frame1, f01, -f01, 0.5)
    # At t = 0.5 every pixel moved by exactly 1 px: frame 0's pixel x lands on x + 1 and
    # frame 1's on x - 1, both showing strip[x + 1] there.
    assert torch.allclose(image[..., 1:7], strip[..., 2:8])
    assert (coverage[..., 1:7] > 0.9).all()
    image, coverage = splat(frame0, frame1, f01, -f01, 0.0)  # frame 1 has no weight at t = 0
    assert torch.allclose(image[..., :6], frame0[..., :6])
    # Frame 0's last columns have no consistent match in frame 1 (their content left the
    # frame): weight exp(-10·error) nearly 0, so they count as holes, filled elsewhere.
    assert coverage[..., :6].min() > 0.99 and coverage[..., 6:].max() < 0.5


def test_flow_prior_downscales_wide_frames_and_scales_vectors_back() -> None:
    first, second, _ = moving_pair(64, 192, shift=(6, 0))
    a, b = to_tensor(first), to_tensor(second)
    f01, f10 = flow_prior(a, b)
    half01, _ = flow_prior(a, b, max_width=100)  # DIS on a 96×32 copy
    assert f01.shape == half01.shape == (1, 2, 64, 192)
    # The background moves 6 px right; both estimates say so in full-size pixels.
    for flow in (f01, half01):
        assert float(flow[0, 0, 8:24, 120:180].median()) == pytest.approx(6, abs=0.75)
        assert float(flow[0, 1, 8:24, 120:180].median()) == pytest.approx(0, abs=0.75)
    assert float(f10[0, 0, 8:24, 120:180].median()) == pytest.approx(-6, abs=0.75)


def test_flow_baseline_weights_follow_the_time() -> None:
    first, second, _ = moving_pair()
    a, b = to_tensor(first), to_tensor(second)
    f01, f10 = flow_prior(a, b)
    assert torch.allclose(FlowPrior(a, b, f01, f10, 0.0).blend(), a, atol=1e-6)
    assert torch.allclose(FlowPrior(a, b, f01, f10, 1.0).blend(), b, atol=1e-6)


def _sample(image: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """(C, H, W) ``image`` read bilinearly at (x + fx, y + fy), positions clamped to the frame."""
    _, height, width = image.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    px, py = np.clip(x + fx, 0, width - 1), np.clip(y + fy, 0, height - 1)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    ax, ay = px - x0, py - y0
    return ((1 - ay) * ((1 - ax) * image[:, y0, x0] + ax * image[:, y0, x1])
            + ay * ((1 - ax) * image[:, y1, x0] + ax * image[:, y1, x1]))


def test_flow_baseline_weights_at_an_inner_time_match_numpy() -> None:
    """At t = 0.3 the weights follow w0 = (1-t)·[inside]/(1+e0²), w1 = t·[inside]/(1+e1²).

    The flows are made by hand: 3 px right one way and back the other, except in a block
    where F10 disagrees (an occlusion), so the forward-backward errors, and with them the
    occlusion factor, differ between the two frames there.
    """
    height, width, t = 20, 24, 0.3
    f01 = np.zeros((2, height, width))
    f01[0] = 3.0
    f10 = -f01.copy()
    f10[:, 6:14, 8:16] = np.array([1.5, -2.0])[:, None, None]
    rng = np.random.default_rng(0)
    frame0, frame1 = rng.random((3, height, width)), rng.random((3, height, width))

    ft0 = -(1 - t) * t * f01 + t * t * f10
    ft1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10
    e0 = np.hypot(*(ft0 + _sample(f01, *ft0) - ft1))
    e1 = np.hypot(*(ft1 + _sample(f10, *ft1) - ft0))
    y, x = np.mgrid[0:height, 0:width]

    def inside(flow: np.ndarray) -> np.ndarray:
        px, py = x + flow[0], y + flow[1]
        return ((px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)).astype(np.float64)

    w0 = (1 - t) * inside(ft0) / (1 + e0**2)
    w1 = t * inside(ft1) / (1 + e1**2)
    weight0 = np.where(w0 + w1 < 1e-6, 1 - t, w0 / np.maximum(w0 + w1, 1e-6))
    blend = weight0 * _sample(frame0, *ft0) + (1 - weight0) * _sample(frame1, *ft1)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array)[None]

    prior = FlowPrior(tensor(frame0), tensor(frame1), tensor(f01), tensor(f10), t)
    np.testing.assert_allclose(prior.error0[0, 0].numpy(), e0, atol=1e-9)
    np.testing.assert_allclose(prior.error1[0, 0].numpy(), e1, atol=1e-9)
    np.testing.assert_allclose(prior.weight0[0, 0].numpy(), weight0, atol=1e-9)
    np.testing.assert_allclose(prior.blend()[0].numpy(), blend, atol=1e-9)
    # The case has teeth: inside the block the occlusion factor moves the weight far from
    # the plain time weight 1 - t, and the frame's edges are outside for one of the frames.
    assert np.abs(weight0[6:14, 8:16] - (1 - t)).max() > 0.2
    assert inside(ft0).min() == 0 or inside(ft1).min() == 0


# --------------------------------------------------------------------------------------
# The network


def test_untrained_flowsep_is_the_flow_baseline() -> None:
    """Training starts from ``eval --method flow``: within 0.05 dB at t = 0.5 (the splat's 1e-3 share)."""
    first, middle, second = moving_pair()
    model = build_model("flowsep").eval()
    with torch.no_grad():
        ours = to_image(model(to_tensor(first)[..., :96, :128], to_tensor(second)[..., :96, :128]).clamp(0, 1))
    flow = FlowInterpolation()(first, second)
    assert abs(psnr(ours, middle) - psnr(flow, middle)) < 0.05
    assert np.abs(ours.astype(int) - flow).max() <= 2
    assert psnr(flow, middle) > psnr(((first.astype(int) + second) // 2).astype(np.uint8), middle) + 3


def test_inputs_come_back_at_t0_and_t1_whatever_the_weights() -> None:
    first, _, second = moving_pair()
    a, b = to_tensor(first), to_tensor(second)
    model = randomised()
    with torch.no_grad():
        start = model(a, b, t=0.0)
        end = model(a, b, t=1.0)
        middle = model(a, b, t=0.5)
    assert (start - a).abs().max() < 1 / 255 and (end - b).abs().max() < 1 / 255
    assert (middle - baseline(a, b)).abs().max() > 0.01  # the residuals do act in between
    assert float(gate(torch.tensor(0.5))) == 1 and float(gate(torch.tensor(0.0))) == 0


@pytest.mark.parametrize("t", [0.3, 0.5])
def test_a_flat_colour_stays_flat_whatever_the_weights(t: float) -> None:
    """Each candidate divides by its kernels' sum, so any kernels, offsets and masks the
    heads predict reproduce a flat colour exactly; without that normalisation the colour
    would be scaled by Σ v·h·m, which random heads push far from 1."""
    colour = torch.tensor([0.8, 0.35, 0.1]).view(1, 3, 1, 1)
    flat = colour.expand(1, 3, 32, 48).contiguous()
    torch.manual_seed(1)
    flows = (torch.randn(1, 2, 32, 48) * 2, torch.randn(1, 2, 32, 48) * 2)
    for seed in range(3):
        model = randomised(seed=seed)
        torch.nn.init.normal_(model.head.weight, std=0.2)
        with torch.no_grad():
            out = model(flat, flat, t=t, flows=flows)
        assert (out - colour).abs().max() < 1e-5


def test_a_batch_of_times_equals_one_call_per_time() -> None:
    first, _, second = moving_pair()
    a, b = to_tensor(first), to_tensor(second)
    model = randomised()
    times = torch.tensor([0.25, 0.5, 0.8])
    with torch.no_grad():
        batched = model(a.expand(3, -1, -1, -1), b.expand(3, -1, -1, -1), t=times)
        single = torch.cat([model(a, b, t=float(t)) for t in times])
    assert torch.allclose(batched, single, atol=1e-5)


def test_gradients_reach_every_head_output() -> None:
    first, middle, second = moving_pair()
    model = build_model("flowsep", TINY).train()
    out = model(to_tensor(first), to_tensor(second), t=0.5)
    (out - to_tensor(middle)).abs().mean().backward()
    grad = model.head.bias.grad
    assert grad is not None and torch.isfinite(grad).all()
    # From the start the kernels, the centre tap's offsets and the blend logits all get a
    # signal; the other taps' offsets follow once the kernels give those taps weight.
    n, taps = 3, 9
    for frame in range(2):
        block = grad[frame * (2 * n + 3 * taps) :]
        assert (block[: 2 * n].abs() > 0).all()  # vertical and horizontal kernels
        assert block[2 * n + taps // 2] != 0 and block[2 * n + taps + taps // 2] != 0  # centre dy, dx
    assert (grad[-3:].abs() > 0).all()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="odd"):
        FlowSepConfig(kernel_size=4)
    with pytest.raises(ValueError, match="four levels"):
        FlowSepConfig(channels=(8, 8, 8))
    with pytest.raises(ValueError, match="divisible by 16"):
        build_model("flowsep", TINY)(torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 48))


def test_weights_round_trip(tmp_path) -> None:  # noqa: ANN001
    model = randomised()
    save_weights(model, tmp_path / "flowsep.pt")
    loaded = load_weights(tmp_path / "flowsep.pt", model="flowsep")
    first, _, second = moving_pair()
    with torch.no_grad():
        assert torch.allclose(model(to_tensor(first), to_tensor(second)), loaded(to_tensor(first), to_tensor(second)),
                              atol=2e-3)


# --------------------------------------------------------------------------------------
# Through the engine


def test_engine_pads_computes_the_flow_once_and_takes_any_time() -> None:
    first, _, second = moving_pair(90, 118)
    a, b = to_tensor(first), to_tensor(second)
    interpolator = Interpolator(randomised(), device="cpu")
    assert interpolator.any_time
    out = interpolator.at(a, b, 0.3)
    assert out.shape == a.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.allclose(interpolator.at(a, b, 0.0), a, atol=1 / 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolator.at(a, b, 1.5)


def test_tiled_equals_untiled() -> None:
    first, _, second = moving_pair(96, 160, shift=(9, 2))
    a, b = to_tensor(first), to_tensor(second)
    model = randomised()
    torch.nn.init.normal_(model.head.weight, std=0.005)  # a smooth model, as trained ones are
    whole = Interpolator(model, device="cpu", tiling=Tiling(tile=0)).at(a, b, 0.4)
    tiled = Interpolator(model, device="cpu", tiling=Tiling(tile=32, context=64, max_pixels=1)).at(a, b, 0.4)
    assert (whole - tiled).abs().max() <= 1 / 255


def test_midpoint_only_models_refuse_other_times(tiny_sepconv: torch.nn.Module) -> None:
    interpolator = Interpolator(tiny_sepconv, device="cpu")
    frames = torch.rand(1, 3, 32, 32)
    assert not interpolator.any_time
    with pytest.raises(ValueError, match="only predicts midpoints"):
        interpolator.at(frames, frames, 0.25)


def test_repeated_pairs_share_one_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """--fps asks for several times between the same pair in one batch: one DIS call for them."""
    import sepconv_cli.flow as flow

    first, _, second = moving_pair()
    a, b = to_tensor(first), to_tensor(second)
    calls: list[int] = []
    real = flow.flow_prior

    def counting(frame0: torch.Tensor, frame1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(frame0.shape[0])
        return real(frame0, frame1)

    monkeypatch.setattr(flow, "flow_prior", counting)
    interpolator = Interpolator(randomised(), device="cpu")
    frames1, frames2 = torch.cat([a, a, b]), torch.cat([b, b, a])
    batched = interpolator.at(frames1, frames2, torch.tensor([0.2, 0.6, 0.5]))
    assert calls == [2]
    one = interpolator.at(a, b, 0.6)
    assert torch.allclose(batched[1], one[0], atol=1e-6)
