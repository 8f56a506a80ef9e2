from __future__ import annotations

import pytest
import torch

from sepconv_cli.models.registry import build_model
from sepconv_cli.models.sepconv import PAPER_CONFIG, SepConv, SepConvConfig
from tests.conftest import TINY_SEPCONV


def test_full_sepconv_has_the_papers_size() -> None:
    model = SepConv()
    parameters = sum(p.numel() for p in model.parameters())
    # Niklaus et al. report about 21.7 M parameters.
    assert 21.5e6 < parameters < 21.9e6, parameters
    assert model.vertical1[-1].out_channels == 51


def test_output_shape_values_and_stride_check(tiny_sepconv: torch.nn.Module) -> None:
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        both = tiny_sepconv(*frames)
        one = [tiny_sepconv(frames[0][i : i + 1], frames[1][i : i + 1]) for i in range(2)]
    assert both.shape == (2, 3, 64, 96)
    # Each sample's output is its own (batching changes no value), and it is not an input.
    torch.testing.assert_close(both, torch.cat(one), atol=1e-5, rtol=0)
    assert (both - frames[0]).abs().mean() > 1e-3 and (both - frames[1]).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny_sepconv(torch.rand(1, 3, 60, 96), torch.rand(1, 3, 60, 96))


@pytest.mark.parametrize("delayed_padding", [True, False])
def test_kernel_normalisation_keeps_flat_colour(delayed_padding: bool) -> None:
    # With normalised kernels the output is a weighted average of input pixels: a flat
    # colour must come out unchanged whatever the (random) kernels are.
    torch.manual_seed(1)
    model = build_model("sepconv", {**TINY_SEPCONV, "delayed_padding": delayed_padding}).eval()
    colour = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    frame = colour.expand(1, 3, 32, 64).clone()
    with torch.no_grad():
        output = model(frame, frame)
    torch.testing.assert_close(output, frame, atol=1e-5, rtol=0)


def test_paper_configuration_runs_without_refinements() -> None:
    """No kernel normalisation in the paper's model: a flat colour comes out scaled by the
    kernels' sum, Σv1·Σh1 + Σv2·Σh2, per pixel (read from the four kernel subnets)."""
    torch.manual_seed(3)
    config = SepConvConfig(**{**PAPER_CONFIG.__dict__, "kernel_size": 5, "channels": (4, 4, 8, 8, 8)})
    model = SepConv(config).eval()
    kernels: list[torch.Tensor] = []
    for subnet in (model.vertical1, model.horizontal1, model.vertical2, model.horizontal2):
        subnet.register_forward_hook(lambda module, args, out: kernels.append(out))
    colour = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    frame = colour.expand(1, 3, 32, 32).clone()
    with torch.no_grad():
        output = model(frame, frame)
    context = 16  # the paper pads the input to the network by 16 px a side for k = 5
    v1, h1, v2, h2 = (k[..., context:-context, context:-context] for k in kernels)
    weight = v1.sum(1, keepdim=True) * h1.sum(1, keepdim=True) + v2.sum(1, keepdim=True) * h2.sum(1, keepdim=True)
    assert output.shape == (1, 3, 32, 32)
    torch.testing.assert_close(output, colour * weight, atol=1e-5, rtol=1e-5)
    assert (weight - 1).abs().max() > 0.01  # really unnormalised, unlike the default model


def test_input_normalisation_is_invariant_to_brightness_scale() -> None:
    # Normalising by the joint mean/std makes the kernels independent of an affine
    # change of the input, so the output follows the input's affine change exactly.
    torch.manual_seed(2)
    model = build_model("sepconv", TINY_SEPCONV).eval()
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = model(a, b)
        out_scaled = model(0.5 * a + 0.25, 0.5 * b + 0.25)
    torch.testing.assert_close(out_scaled, 0.5 * out + 0.25, atol=1e-4, rtol=1e-4)


def test_even_kernel_size_is_refused() -> None:
    with pytest.raises(ValueError, match="odd"):
        SepConvConfig(kernel_size=4)
