"""Four-frame (quadratic) motion: the flows, and the FlowSep network that chooses between them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepconv_cli.flow import (
    FlowPrior, Neighbours, flow_prior, intermediate_flows, neighbour_flows, quadratic_flows, splat, warp,
)
from sepconv_cli.models.flowsep import (
    ALPHA_RANGE, ALPHA_SCALE, BETA_RANGE, BETA_SCALE, FLOW_SCALE, FlowSep, FlowSepConfig, widen_state_dict,
)
from sepconv_cli.models.registry import build_model, load_weights

V, A = 1.0, 6.0  # px per frame, px per frame²: the texture is at v·τ + a·τ²/2 at time τ


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def accelerating(tau: float, height: int = 96, width: int = 128) -> torch.Tensor:
    """Smooth random texture (no period, so flow is unambiguous) moving right with constant
    acceleration, sampled at sub-pixel positions, (1, 3, H, W) in [0, 1]."""
    import cv2

    rng = np.random.default_rng(7)
    canvas = cv2.GaussianBlur(rng.random((height, width + 96, 3)).astype(np.float32), (0, 0), 2.0)
    canvas = (canvas - canvas.mean()) / canvas.std() * 0.18 + 0.5
    xs = np.arange(width, dtype=np.float32) + 48 - (V * tau + A * tau * tau / 2)
    map_x = np.broadcast_to(xs, (height, width)).astype(np.float32)
    map_y = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], (height, width)).astype(np.float32)
    frame = cv2.remap(canvas, map_x, map_y, cv2.INTER_CUBIC)
    return torch.from_numpy(frame).permute(2, 0, 1)[None].clamp(0, 1)


def exact_flow(dx: float, height: int = 96, width: int = 128) -> torch.Tensor:
    flow = torch.zeros(1, 2, height, width)
    flow[:, 0] = dx
    return flow


def interior_psnr(a: torch.Tensor, b: torch.Tensor, margin: int = 24) -> float:
    diff = (a - b)[..., margin:-margin, margin:-margin]
    return float(10 * torch.log10(1 / diff.pow(2).mean()))


def test_quadratic_flows_are_exact_for_constant_acceleration_and_linear_at_the_ends() -> None:
    p = lambda tau: V * tau + A * tau * tau / 2  # noqa: E731
    f01, f10 = exact_flow(p(1) - p(0)), exact_flow(p(0) - p(1))
    f0m, f12 = exact_flow(p(-1) - p(0)), exact_flow(p(2) - p(1))
    for t in (0.25, 0.5, 0.8):
        q0, q1 = quadratic_flows(f01, f10, f0m, f12, t)
        assert torch.allclose(q0[:, 0], torch.full_like(q0[:, 0], p(0) - p(t)), atol=1e-5)
        assert torch.allclose(q1[:, 0], torch.full_like(q1[:, 0], p(1) - p(t)), atol=1e-5)
    # Uneven neighbours (a dropped frame before the pair): the real spacing keeps it exact.
    f0m2 = exact_flow(p(-2) - p(0))
    q0, _ = quadratic_flows(f01, f10, f0m2, f12, 0.5, before=2.0)
    assert torch.allclose(q0[:, 0], torch.full_like(q0[:, 0], p(0) - p(0.5)), atol=1e-5)
    # t = 0 and t = 1 give the linear flows, and so do invalid neighbours.
    for t in (0.0, 1.0):
        assert all(torch.allclose(q, lin, atol=1e-6) for q, lin in
                   zip(quadratic_flows(f01, f10, f0m, f12, t), intermediate_flows(f01, f10, t)))
    q = quadratic_flows(f01, f10, f0m, f12, 0.5, valid=torch.zeros(1))
    assert all(torch.allclose(a, b) for a, b in zip(q, intermediate_flows(f01, f10, 0.5)))


def test_on_an_accelerating_texture_the_quadratic_path_lands_on_the_true_frame_where_linear_misses() -> None:
    before, frame0, truth, frame1, after = (accelerating(tau) for tau in (-1, 0, 0.5, 1, 2))
    prior = FlowPrior(frame0, frame1, *_dis(frame0, frame1), 0.5)
    neighbours = neighbour_flows(before, frame0, frame1, after)
    q0, q1 = quadratic_flows(*_dis(frame0, frame1), neighbours.f0m, neighbours.f12, 0.5)
    linear = interior_psnr(prior.blend(), truth)
    quadratic = interior_psnr(0.5 * warp(frame0, q0) + 0.5 * warp(frame1, q1), truth)
    assert linear < 30 and quadratic > linear + 8, (linear, quadratic)

    # Through the network: a quadratic FlowSep whose α head says "all the way" follows the
    # quadratic flows inside the fused synthesis op.
    torch.manual_seed(0)
    model = FlowSep(FlowSepConfig(channels=(4, 8, 8, 8), quadratic=True)).eval()
    with torch.no_grad():
        model.head.bias[-2:] = 1.0 / ALPHA_SCALE
        steered = model(frame0, frame1, t=0.5, neighbours=neighbours)
        unsteered = model(frame0, frame1, t=0.5)  # no neighbours: linear motion
    assert interior_psnr(steered, truth) > interior_psnr(unsteered, truth) + 8


def _dis(frame0: torch.Tensor, frame1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from sepconv_cli.flow import flow_prior

    return flow_prior(frame0, frame1)


def test_a_quadratic_network_widened_from_linear_weights_is_exactly_the_linear_one() -> None:
    # The shipped weights are four-frame themselves now, so the linear network to widen is
    # their architecture with quadratic=False and a head moved off zero (a trained one's).
    base = load_weights("weights/flowsep.pt").config.__dict__
    linear = build_model("flowsep", dict(FlowSepConfig(**{**base, "quadratic": False}).__dict__))
    torch.manual_seed(7)
    with torch.no_grad():
        for parameter in linear.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    linear.eval()
    config = dict(FlowSepConfig(**{**base, "quadratic": True}).__dict__)
    widened = build_model("flowsep", config)
    widened.load_state_dict(widen_state_dict(linear.state_dict(), widened))
    widened.eval()
    frames = [accelerating(tau, 64, 96) for tau in (-1, 0, 1, 2)]
    neighbours = neighbour_flows(*frames)
    with torch.no_grad():
        for t in (0.3, 0.5):
            expected = linear(frames[1], frames[2], t=t)
            assert torch.equal(widened(frames[1], frames[2], t=t, neighbours=neighbours), expected)
            assert torch.equal(widened(frames[1], frames[2], t=t), expected)


def test_quadratic_flows_from_the_priors_flows_and_grids_are_the_same_bit_for_bit() -> None:
    torch.manual_seed(2)
    a, b = torch.rand(2, 3, 24, 40), torch.rand(2, 3, 24, 40)
    f01, f10, f0m, f12 = (torch.randn(2, 2, 24, 40) * 3 for _ in range(4))
    t, valid = torch.tensor([0.3, 0.6]), torch.tensor([1.0, 0.0])
    alone = quadratic_flows(f01, f10, f0m, f12, t, 0.8, 1.5, valid)
    shared = quadratic_flows(f01, f10, f0m, f12, t, 0.8, 1.5, valid, prior=FlowPrior(a, b, f01, f10, t))
    assert all(torch.equal(x, y) for x, y in zip(shared, alone))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_unet_reads_exactly_the_documented_channels_in_the_weights_format(channels_last: bool) -> None:
    """The U-Net's input, built plane by plane and then copied once to the weights' memory
    format, against the 34 channels concatenated as the module docstring lists them."""
    torch.manual_seed(0)
    model = FlowSep(FlowSepConfig(channels=(4, 8, 8, 8), quadratic=True)).eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    frames = [accelerating(tau, 64, 96) for tau in (-1, 0, 1, 2)]
    neighbours = neighbour_flows(*frames)
    seen: list[torch.Tensor] = []
    model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(frames[1], frames[2], t=0.3, neighbours=neighbours)
    a, b = frames[1], frames[2]
    f01, f10 = flow_prior(a, b)
    prior = FlowPrior(a, b, f01, f10, 0.3)
    splatted, coverage = splat(a, b, f01, f10, prior.t)
    splatted = torch.where(coverage > 1e-3, splatted, prior.blend())
    q0, q1 = quadratic_flows(f01, f10, neighbours.f0m, neighbours.f12, 0.3, valid=neighbours.valid)
    expected = torch.cat([
        a - 0.5, b - 0.5, prior.warped0 - 0.5, prior.warped1 - 0.5, splatted - 0.5,
        torch.log1p(prior.error0), torch.log1p(prior.error1), coverage.clamp(0, 2), prior.t.expand_as(coverage),
        prior.ft0 / FLOW_SCALE, prior.ft1 / FLOW_SCALE,
        warp(a, q0) - 0.5, warp(b, q1) - 0.5, (q0 - prior.ft0) / FLOW_SCALE, (q1 - prior.ft1) / FLOW_SCALE,
        torch.ones_like(coverage),
    ], 1)
    assert torch.equal(seen[0], expected)
    assert seen[0].is_contiguous(memory_format=layout)


def _steered_by_concatenation(model: FlowSep, params: torch.Tensor, deltas: torch.Tensor | None,
                              still: torch.Tensor | None) -> torch.Tensor:
    """``FlowSep._steer`` written without touching the head's output: a shift map for every
    parameter channel, zero but on the frames' dy and dx taps, added to a slice of it."""
    n, k = model.config.kernel_size, model.per_frame
    moves = []
    if deltas is not None:
        moves.append(((ALPHA_SCALE * params[:, 2 * k + 3 : 2 * k + 5]).clamp(*ALPHA_RANGE), deltas))
    if still is not None:
        beta = params[:, 2 * k + 5 : 2 * k + 7] if deltas is not None else params[:, 2 * k + 3 : 2 * k + 5]
        moves.append(((BETA_SCALE * beta).clamp(*BETA_RANGE), still))

    def zeros(channels: int) -> torch.Tensor:
        return torch.zeros_like(params[:, :1]).expand(-1, channels, -1, -1)

    parts = []
    for f in range(2):
        move = sum(weight[:, f : f + 1] * direction[:, 2 * f : 2 * f + 2] for weight, direction in moves)
        parts += [zeros(2 * n), move[:, 1:2].expand(-1, n * n, -1, -1), move[:, 0:1].expand(-1, n * n, -1, -1),
                  zeros(n * n)]
    return params[:, : 2 * k + 3] + torch.cat([*parts, zeros(3)], 1)


@pytest.mark.parametrize("options", [{"quadratic": True}, {"quadratic": True, "hedge": True}, {"hedge": True}])
def test_steering_in_place_gives_the_outputs_and_gradients_of_a_separate_sum(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, bool],
) -> None:
    """_steer adds the quadratic (and hedge) shifts into the head's own output: in training,
    too, the frame and every gradient must be those of the out-of-place definition."""
    frames = [accelerating(tau, 48, 64) for tau in (-1, 0, 1, 2)]
    neighbours = neighbour_flows(*frames)
    truth = accelerating(0.5, 48, 64)

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(4)
        model = FlowSep(FlowSepConfig(channels=(4, 8, 8, 8), **options)).train()
        with torch.no_grad():
            model.head.weight.normal_(std=0.05)
            model.head.bias.normal_(std=0.05)
            model.head.bias[2 * model.per_frame + 3 :] = 0.5 / ALPHA_SCALE  # α and β in their ranges' interior
        out = model(frames[1], frames[2], t=0.4, neighbours=neighbours)
        (out - truth).abs().mean().backward()
        return out.detach(), {name: p.grad for name, p in model.named_parameters()}

    out, grads = run()
    monkeypatch.setattr(FlowSep, "_steer", _steered_by_concatenation)
    expected_out, expected_grads = run()
    assert torch.allclose(out, expected_out, rtol=0, atol=1e-6)
    if options == {"quadratic": True}:  # one shift: the very same adds
        assert torch.equal(out, expected_out)
    assert grads["head.weight"][-2:].abs().sum() > 0  # α (β where hedging) does get a gradient
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_neighbours_crop_with_their_tile() -> None:
    n = Neighbours(torch.arange(2 * 6 * 8.0).reshape(1, 2, 6, 8), torch.zeros(1, 2, 6, 8), before=2.0)
    tile = n.crop(1, 2, 3, 4)
    assert tile.f0m.shape == (1, 2, 3, 4) and tile.before == 2.0
    assert torch.equal(tile.f0m, n.f0m[..., 1:4, 2:6])


# -- the stream: which pairs get neighbours -------------------------------------------------


def _recording_midpoint(calls: list):
    def midpoint(a: torch.Tensor, b: torch.Tensor, neighbours=None) -> torch.Tensor:
        assert neighbours is not None
        for k in range(a.shape[0]):
            calls.append((float(neighbours.valid[k]), float(neighbours.before_gap[k]), float(neighbours.after_gap[k]),
                          torch.equal(neighbours.before[k], a[k])))
        return (a + b) / 2
    return midpoint


def test_stream_neighbours_skip_the_ends_and_shot_cuts(tmp_path) -> None:
    from sepconv_cli.pipeline import VideoOptions, interpolate_video
    from tests.media import make_video

    src = make_video(tmp_path / "in.mp4", frames=10, cut_at=5, audio=False)
    calls: list = []
    interpolate_video(src, tmp_path / "out.mkv", _recording_midpoint(calls),
                      options=VideoOptions(preset="ultrafast", batch_size=3))
    # Pairs (0,1) … (8,9); (4,5) is the cut and is not interpolated. Neighbours exist for
    # (1,2), (2,3) and (6,7), (7,8): not the first or last pair, not next to the cut.
    assert [c[0] for c in calls] == [0, 1, 1, 0, 0, 1, 1, 0]
    assert all(c[1:3] == (1.0, 1.0) for c in calls)
    assert [c[3] for c in calls if c[0] == 0] == [True] * 4  # placeholders are the pair's own frames


def test_stream_neighbours_use_real_timestamps_and_drop_uneven_ones(tmp_path) -> None:
    from fractions import Fraction

    from sepconv_cli.neighbourhood import Around, gaps
    from sepconv_cli.video import Frame

    def frame(ms: int) -> Frame:
        return Frame(np.zeros((2, 2, 3), np.uint8), Fraction(ms, 1000), 0, timestamp=ms)

    a, b = frame(40), frame(80)
    assert gaps(a, b, Around(frame(0), frame(120))) == (1.0, 1.0)
    assert gaps(a, b, Around(frame(20), frame(140))) == (0.5, 1.5)  # VFR: measured, not assumed
    assert gaps(a, b, Around(frame(-60), frame(120))) is None  # 2.5 intervals back: linear
    assert gaps(a, b, Around(None, frame(120))) is None


def test_a_quadratic_flowsep_interpolates_a_stream_through_the_cli(tmp_path) -> None:
    from click.testing import CliRunner

    from sepconv_cli.cli import cli
    from sepconv_cli.models.registry import save_weights
    from tests.media import make_video

    torch.manual_seed(0)
    model = FlowSep(FlowSepConfig(channels=(4, 8, 8, 8), quadratic=True))
    with torch.no_grad():
        model.head.bias[-2:] = 1.0 / ALPHA_SCALE
    weights = tmp_path / "q.pt"
    save_weights(model, weights)
    src = make_video(tmp_path / "in.mp4", width=64, height=48, frames=6, audio=False)
    for extra in ([], ["--fps", "60"]):
        out = tmp_path / f"out{len(extra)}.mkv"
        result = CliRunner().invoke(cli, ["interpolate", str(src), "--weights", str(weights), "--out", str(out),
                                          "--device", "cpu", "--quiet", *extra])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0


def test_the_engine_passes_neighbours_through_padding_and_tiles() -> None:
    from sepconv_cli.engine import Interpolator, Tiling
    from sepconv_cli.flow import Surroundings

    before, frame0, truth, frame1, after = (accelerating(tau, 90, 124) for tau in (-1, 0, 0.5, 1, 2))
    torch.manual_seed(0)
    model = FlowSep(FlowSepConfig(channels=(4, 8, 8, 8), quadratic=True))
    with torch.no_grad():
        model.head.bias[-2:] = 1.0 / ALPHA_SCALE
    around = Surroundings(before, after, torch.ones(1), torch.ones(1), torch.ones(1))
    whole = Interpolator(model, device="cpu")
    tiled = Interpolator(model, device="cpu", tiling=Tiling(tile=48, context=32, max_pixels=1))
    steered = whole.at(frame0, frame1, 0.5, around)
    linear = whole.at(frame0, frame1, 0.5)
    assert interior_psnr(steered, truth) > interior_psnr(linear, truth) + 8
    assert (tiled.at(frame0, frame1, 0.5, around) - steered).abs().amax() < 2e-3
    off = Surroundings(before, after, torch.ones(1), torch.ones(1), torch.zeros(1))
    assert torch.equal(whole.at(frame0, frame1, 0.5, off), linear)


def test_eval_hands_neighbours_only_from_given_frames_and_never_across_a_cut(tmp_path) -> None:
    from sepconv_cli.evaluation.benchmarks import _video_thirds, _video_triplets
    from sepconv_cli.video import FrameReader
    from tests.media import make_video

    src = make_video(tmp_path / "in.mkv", frames=16, cut_at=8, audio=False, codec="ffv1", pix_fmt="yuv444p")
    with FrameReader(src) as reader:
        frames = [f.rgb for f in reader]
    triplets = list(_video_triplets("clip", src, 2, None))
    assert [t.frame for t in triplets] == [str(k) for k in range(1, 15, 2)]
    for item in triplets:
        k = int(item.frame)  # truth k, inputs k-1 and k+1, neighbours k-3 and k+3 (even: never scored)
        expect_before = k - 3 >= 0 and not (k - 3 < 8 <= k - 1)
        expect_after = k + 3 < 16 and not (k + 1 < 8 <= k + 3)
        assert (item.before is not None) == expect_before, k
        assert (item.after is not None) == expect_after, k
        if item.before is not None:
            assert np.array_equal(item.before, frames[k - 3])
        if item.after is not None:
            assert np.array_equal(item.after, frames[k + 3])
    thirds = list(_video_thirds("clip", src))
    assert [t.frame for t in thirds] == [str(k) for k in range(1, 15) if k % 3]
    inner = [t for t in thirds if t.frame in ("4", "5")]  # inputs 3 and 6, neighbours 0 and 9 (9 is past the cut)
    assert all(t.before is not None and np.array_equal(t.before, frames[0]) and t.after is None for t in inner)


# -- training: windows in, the widened start scores what the linear weights scored ---------


def test_a_quadratic_run_widened_from_linear_weights_starts_where_they_were_and_trains_on_windows(tmp_path) -> None:
    import json

    from sepconv_cli.data.prepare import SelectionParams, prepare_frames
    from tests.test_prepare import write_sequence
    from sepconv_cli.models.registry import save_weights
    from sepconv_cli.training import TrainConfig, train
    from tests.media import texture

    frames = [texture(k, 96, 72) for k in range(9)]
    write_sequence(tmp_path / "seqs" / "pan", frames, ".png")
    params = SelectionParams(patches=2, size=64, static_flow=0.0, static_diff=0.0)
    prepare_frames(tmp_path / "seqs", tmp_path / "cache", params)
    torch.manual_seed(0)
    linear = FlowSep(FlowSepConfig(channels=(4, 8, 8, 8)))
    torch.nn.init.normal_(linear.head.weight, std=0.02)
    save_weights(linear, tmp_path / "linear.pt")
    common = dict(model="flowsep", data=str(tmp_path / "cache"), val_data=str(tmp_path / "cache"), crop=48,
                  batch_size=2, workers=0, epochs=None, log_every=1, samples=0, validate_init=True,
                  init=str(tmp_path / "linear.pt"))
    train(TrainConfig(**common, max_steps=1, lr=1e-12), tmp_path / "linear-run")
    train(TrainConfig(**common, model_config={"quadratic": True}, max_steps=3, optimizer="adam", warmup_steps=2),
          tmp_path / "quadratic-run")

    def start(run: str) -> float:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return next(r["psnr"] for r in rows if r["kind"] == "val" and r["step"] == 0)

    assert start("quadratic-run") == start("linear-run")
    trained = load_weights(tmp_path / "quadratic-run" / "weights.pt")
    assert trained.config.quadratic and trained.head.weight[-2:].abs().sum() > 0  # α learned something


def test_the_tiling_reach_covers_the_quadratic_flows() -> None:
    from sepconv_cli.engine import _flow_reach

    torch.manual_seed(3)
    for before, after in ((1.0, 1.0), (0.5, 2.0), (2.0, 0.5)):
        f01, f10, f0m, f12 = (torch.randn(2, 2, 16, 16) * scale for scale in (4, 4, 12, 12))
        q0, q1 = quadratic_flows(f01, f10, f0m, f12, torch.rand(2), before, after)
        reach = _flow_reach(f01, f10, Neighbours(f0m, f12, before, after))
        assert float(torch.cat([q0, q1]).abs().amax()) <= reach
        assert reach > _flow_reach(f01, f10, None)
