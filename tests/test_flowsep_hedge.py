"""FlowSep's zero-motion hedge (``hedge=True``): β pulls each frame's taps back to the unwarped pixel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sepconv_cli.commands.train import parse_model_config
from sepconv_cli.ext.flowsep_synthesis import SPLAT_PRIOR
from sepconv_cli.flow import FlowPrior, flow_prior, neighbour_flows, splat
from sepconv_cli.models.flowsep import ALPHA_SCALE, BETA_SCALE, FlowSep, FlowSepConfig, head_layout, widen_state_dict
from sepconv_cli.models.registry import build_model, load_weights, model_config, save_weights, widened
from tests.test_flowsep import moving_pair, to_tensor
from tests.test_quadratic import accelerating, interior_psnr

TINY = (4, 8, 8, 8)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_looking(seed: int = 7, **options: bool) -> FlowSep:
    """A tiny FlowSep with every weight off its initial value, the head's included (as a
    trained network's), so a channel that lands in the wrong place changes the output."""
    torch.manual_seed(seed)
    model = FlowSep(FlowSepConfig(channels=TINY, **options))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
        model.head.weight.normal_(std=0.05)
        model.head.bias.normal_(std=0.05)
        # α and β at 0.5, inside their clamps, where a channel in the wrong place shows.
        for name, scale in (("alpha", ALPHA_SCALE), ("beta", BETA_SCALE)):
            if name in model.layout:
                model.head.bias[model.layout[name]] += 0.5 / scale
    return model.eval()


@pytest.fixture(scope="module")
def frames() -> list[torch.Tensor]:
    return [accelerating(tau, 48, 64) for tau in (-1, 0, 1, 2)]


def outputs(model: torch.nn.Module, frames: list[torch.Tensor]) -> list[torch.Tensor]:
    """``model``'s frames at two times, with the neighbours and without (linear motion)."""
    neighbours = neighbour_flows(*frames)
    with torch.no_grad():
        return [model(frames[1], frames[2], t=t, neighbours=near) for t in (0.3, 0.5) for near in (neighbours, None)]


def test_the_head_layout_keeps_alpha_in_place_and_puts_beta_last() -> None:
    synthesis = slice(0, 69)
    assert head_layout(3, False, False) == {"synthesis": synthesis}
    assert head_layout(3, True, False) == {"synthesis": synthesis, "alpha": slice(69, 71)}
    assert head_layout(3, False, True) == {"synthesis": synthesis, "beta": slice(69, 71)}
    assert head_layout(3, True, True) == {"synthesis": synthesis, "alpha": slice(69, 71), "beta": slice(71, 73)}
    assert FlowSep(FlowSepConfig(channels=TINY, quadratic=True, hedge=True)).head.out_channels == 73


@pytest.mark.parametrize(("start", "changes"), [
    ({"quadratic": True}, {"hedge": True}),
    ({}, {"hedge": True}),
    ({}, {"quadratic": True, "hedge": True}),
    ({"hedge": True}, {"quadratic": True}),  # β moves past the new α
])
def test_a_network_grown_to_hedge_computes_exactly_what_it_did(
    frames: list[torch.Tensor], start: dict[str, bool], changes: dict[str, bool],
) -> None:
    before = trained_looking(**start)
    expected = outputs(before, frames)
    grown = widened(before, changes)
    assert grown is not None and grown.config == FlowSepConfig(channels=TINY, **{**start, **changes})
    by_hand = FlowSep(grown.config)
    by_hand.load_state_dict(widen_state_dict(before.state_dict(), by_hand))
    for network in (grown.eval(), by_hand.eval()):
        for name, rows in before.layout.items():  # every old head channel where the new layout says
            assert torch.equal(network.head.weight[network.layout[name]], before.head.weight[rows])
        new = set(network.layout) - set(before.layout)
        assert all(not network.head.weight[network.layout[name]].any() for name in new)
        for got, want in zip(outputs(network, frames), expected):
            assert torch.equal(got, want)


def test_the_shipped_weights_grown_as_the_train_cli_asks_are_the_shipped_network(frames: list[torch.Tensor]) -> None:
    """``sepconv train --init weights/flowsep.pt --model-config quadratic=true --model-config
    hedge=true``: the trainer hands the parsed options to ``widened`` when they differ."""
    shipped = load_weights("weights/flowsep.pt")
    changes = parse_model_config(("quadratic=true", "hedge=true"))
    assert any(model_config(shipped).get(k) != v for k, v in changes.items())
    grown = widened(shipped, changes)
    assert grown is not None and model_config(grown) == {**model_config(shipped), **changes}
    for got, want in zip(outputs(grown.eval(), frames), outputs(shipped, frames)):
        assert torch.equal(got, want)


def test_only_turning_options_on_grows_a_network() -> None:
    hedging = trained_looking(hedge=True)
    assert widened(hedging, {"hedge": False}) is None
    assert widened(hedging, {"hedge": True, "kernel_size": 5}) is None
    assert widened(trained_looking(), {"hedge": 1}).config.hedge is True
    with pytest.raises(ValueError, match="does not grow"):
        widen_state_dict(hedging.state_dict(), FlowSep(FlowSepConfig(channels=TINY, quadratic=True)))


def _textured_pair() -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A texture moving (5, -3) px between the frames with a square moving the other way
    over it (the flow has edges, where pooling it to the head's resolution is not exact),
    and its DIS flows."""
    first, _, second = moving_pair()
    frame0, frame1 = to_tensor(first), to_tensor(second)
    return frame0, frame1, flow_prior(frame0, frame1)


@pytest.mark.parametrize("quadratic", [False, True])
def test_beta_one_gives_the_blend_of_the_unwarped_frames(quadratic: bool) -> None:
    frame0, frame1, flows = _textured_pair()
    model = FlowSep(FlowSepConfig(channels=TINY, quadratic=quadratic, hedge=True)).eval()
    with torch.no_grad():
        flow_result = model(frame0, frame1, t=0.5, flows=flows)
        model.head.bias[model.layout["beta"]] = 2 / BETA_SCALE  # β = 1 after the clamp, every other residual 0
        hedged = model(frame0, frame1, t=0.5, flows=flows)
    # The untrained synthesis (flowsep_synthesis_reference with zero residuals): the candidates
    # are the frames sampled at Ft_f + r_o, which β = 1 makes 0 (up to bilinear upsampling of
    # the pooled flow), with one-hot kernels and unit masks, blended by the softmax of
    # (log w0, log(1 - w0), log SPLAT_PRIOR), the prior's weights clamped to 1e-6 in the log.
    prior = FlowPrior(frame0, frame1, *flows, 0.5)
    splatted, coverage = splat(frame0, frame1, *flows, prior.t)
    splatted = torch.where(coverage > 1e-3, splatted, prior.blend())
    w0, w1 = prior.weight0.clamp_min(1e-6), (1 - prior.weight0).clamp_min(1e-6)
    blend = (w0 * frame0 + w1 * frame1 + SPLAT_PRIOR * splatted) / (w0 + w1 + SPLAT_PRIOR)
    assert interior_psnr(hedged, blend) > 45  # 68 dB when written: all but the flow's edges are exact
    # On moving content that is far from what the flow gives, which the untrained network is.
    assert interior_psnr(flow_result, blend) < 32 and interior_psnr(hedged, flow_result) < 32


@pytest.mark.parametrize("quadratic", [False, True])
def test_gradients_reach_beta_from_the_zero_start_and_from_a_trained_head(frames: list[torch.Tensor],
                                                                           quadratic: bool) -> None:
    """A grown network's β channels start at exactly 0: the gradient must pass there, or β
    would never leave it."""
    truth = accelerating(0.5, 48, 64)
    neighbours = neighbour_flows(*frames)
    zero_start = widened(trained_looking(quadratic=quadratic), {"hedge": True})
    for model in (zero_start, trained_looking(quadratic=quadratic, hedge=True)):
        model.train()
        out = model(frames[1], frames[2], t=0.4, neighbours=neighbours)
        (out - truth).abs().mean().backward()
        beta = model.layout["beta"]
        assert model.head.weight.grad[beta].abs().sum() > 0 and (model.head.bias.grad[beta] != 0).all()


def test_a_hedging_network_saved_as_training_saves_it_loads_back_the_same(
    tmp_path: Path, frames: list[torch.Tensor],
) -> None:
    model = trained_looking(quadratic=True, hedge=True)
    save_weights(model, tmp_path / "hedge.pt", metadata={"step": 1})  # what the trainer's export writes
    loaded = load_weights(tmp_path / "hedge.pt", model="flowsep")
    assert loaded.config == model.config and loaded.config.hedge
    for got, want in zip(outputs(loaded, frames), outputs(model, frames)):
        assert torch.equal(got, want)
    assert build_model("flowsep", model_config(loaded)).head.out_channels == 73


def test_under_bf16_autocast_the_taps_move_in_float32() -> None:
    """``--precision bf16``: the head's output is bf16, but the hedge moves the taps by whole
    flows (here 0.75 of 25 px), where bf16 rounds to 1/8 px; the move must be added in float32."""
    frame0, frame1 = accelerating(0, 48, 64), accelerating(1, 48, 64)
    flows = (torch.full((1, 2, 48, 64), 50.3), torch.full((1, 2, 48, 64), -50.3))
    model = FlowSep(FlowSepConfig(channels=TINY, quadratic=True, hedge=True)).eval()
    with torch.no_grad():
        model.head.bias[model.layout["beta"]] = 0.75 / BETA_SCALE  # β = 0.75, exact in bf16
        full = model(frame0, frame1, t=0.5, flows=flows)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(frame0, frame1, t=0.5, flows=flows)
    assert half.dtype == torch.float32
    # The head's weights are zero and its biases exact in bf16, so only the move could differ.
    assert torch.allclose(half, full, atol=1e-5), (half - full).abs().max()
