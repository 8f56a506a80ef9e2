from __future__ import annotations

from pathlib import Path

import torch

from sepconv_cli.engine import Interpolator
from sepconv_cli.models.dsepconv import DSepConv
from sepconv_cli.models.registry import load_weights, save_weights


def test_full_dsepconv_shapes_and_size() -> None:
    model = DSepConv()
    assert [s[-1].out_channels for s in model.kernels] == [5] * 4
    assert [s[-1].out_channels for s in model.offsets] == [25] * 4
    assert [s[-2].out_channels for s in model.masks] == [25] * 2  # conv, then the sigmoid
    assert isinstance(model.masks[0][-1], torch.nn.Sigmoid)
    parameters = sum(p.numel() for p in model.parameters())
    assert 15e6 < parameters < 25e6, parameters


def test_starts_as_plain_separable_convolution(tiny_dsepconv: torch.nn.Module) -> None:
    # Zero-initialised offset heads: the untrained network's offsets are exactly zero.
    features = tiny_dsepconv.unet(torch.rand(1, 6, 32, 32))
    for subnet in tiny_dsepconv.offsets:
        assert torch.count_nonzero(subnet(features)) == 0


def test_flat_colour_is_kept(tiny_dsepconv: torch.nn.Module) -> None:
    frame = torch.tensor([0.1, 0.6, 0.3]).view(1, 3, 1, 1).expand(1, 3, 32, 64).clone()
    with torch.no_grad():
        torch.testing.assert_close(tiny_dsepconv(frame, frame), frame, atol=1e-5, rtol=0)


def test_gradients_reach_every_head(tiny_dsepconv: torch.nn.Module) -> None:
    tiny_dsepconv.train()
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    tiny_dsepconv(a, b).sub(b).abs().mean().backward()
    for group in (tiny_dsepconv.kernels, tiny_dsepconv.offsets, tiny_dsepconv.masks):
        for subnet in group:
            assert subnet[-2 if isinstance(subnet[-1], torch.nn.Sigmoid) else -1].weight.grad.abs().sum() > 0


def test_weights_round_trip_and_engine(tmp_path: Path, tiny_dsepconv: torch.nn.Module) -> None:
    # Every parameter moved off its initial value (the offset heads start at zero), so a
    # tensor that failed to load would show in the outputs.
    torch.manual_seed(4)
    with torch.no_grad():
        for parameter in tiny_dsepconv.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    path = tmp_path / "d.pt"
    save_weights(tiny_dsepconv, path, quantised=False)
    model = load_weights(path, model="dsepconv")
    assert model.config == tiny_dsepconv.config
    original = tiny_dsepconv.state_dict()
    assert all(torch.equal(value, original[name]) for name, value in model.state_dict().items())
    a, b = torch.rand(1, 3, 45, 37), torch.rand(1, 3, 45, 37)
    out = Interpolator(model, device="cpu").midpoint(a, b)
    assert out.shape == (1, 3, 45, 37) and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, Interpolator(tiny_dsepconv, device="cpu").midpoint(a, b))
