"""Loss values by hand, spec parsing, and the VGG-19 feature loss with random weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sepconv_cli.errors import InputError
from sepconv_cli.losses import (
    CHARBONNIER_EPSILON,
    LossTerm,
    Objective,
    VGG19Features,
    build_objective,
    charbonnier_loss,
    find_vgg19_weights,
    gradient_loss,
    l1_loss,
    l2_loss,
    parse_losses,
    ssim_loss,
)

# torchvision's vgg19().features indices of the 12 convolutions up to relu4_4.
VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> object:
    """Small convolutions run fastest on one thread, most of all on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(seed: int = 0, shape: tuple[int, ...] = (2, 3, 16, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def test_pixel_losses_by_hand() -> None:
    prediction = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)
    target = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 1, 2, 2)
    assert float(l1_loss(prediction, target)) == pytest.approx((0.5 + 0 + 1 + 0.25) / 4)
    assert float(l2_loss(prediction, target)) == pytest.approx((0.25 + 0 + 1 + 0.0625) / 4)
    e2 = CHARBONNIER_EPSILON**2
    expected = sum(math.sqrt(d * d + e2) for d in (0.5, 0, 1, 0.25)) / 4
    assert float(charbonnier_loss(prediction, target)) == pytest.approx(expected, rel=1e-6)
    assert float(charbonnier_loss(target, target)) == pytest.approx(CHARBONNIER_EPSILON, rel=1e-6)


def test_ssim_loss() -> None:
    a, b = images(shape=(2, 3, 24, 24))
    assert float(ssim_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert 0.5 < float(ssim_loss(a, b)) < 1.5  # unrelated noise: SSIM near 0
    a.requires_grad_(True)
    ssim_loss(a, b).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_gradient_loss_by_hand() -> None:
    a, b = images()
    assert float(gradient_loss(a, a)) == 0.0
    assert float(gradient_loss(a + 0.3, a)) == pytest.approx(0.0, abs=1e-6)  # same gradients
    # A horizontal ramp against a flat target: |Δ| = 1 between horizontal neighbours, 0 at the
    # replicated border and vertically; left and right each have 3 of 4 columns at 1.
    ramp = torch.arange(4.0).repeat(4, 1).view(1, 1, 4, 4)
    assert float(gradient_loss(ramp, torch.zeros_like(ramp))) == pytest.approx((0 + 0 + 0.75 + 0.75) / 4)
    # Against numpy, for random images: mean over directions of mean | |Δp| - |Δt| |.
    p, t = a[0, 0].numpy().astype(np.float64), b[0, 0].numpy().astype(np.float64)
    pp, tp = np.pad(p, 1, mode="edge"), np.pad(t, 1, mode="edge")
    values = []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        dp = np.abs(p - pp[1 + dy : 17 + dy, 1 + dx : 17 + dx])
        dt = np.abs(t - tp[1 + dy : 17 + dy, 1 + dx : 17 + dx])
        values.append(np.abs(dp - dt).mean())
    assert float(gradient_loss(a[:1, :1], b[:1, :1])) == pytest.approx(np.mean(values), rel=1e-5)


def test_parse_losses() -> None:
    assert parse_losses(["l1"]) == [LossTerm("l1", 1.0)]
    assert parse_losses(["l1", "vgg:1e-5"]) == parse_losses(["L1+vgg:1e-5"]) == [LossTerm("l1", 1.0), LossTerm("vgg", 1e-5)]
    assert parse_losses(["charbonnier:1", "charbonnier:0.5"]) == [LossTerm("charbonnier", 1.5)]
    assert parse_losses(["dsepconv:2"]) == [LossTerm("charbonnier", 2.0), LossTerm("flip-charbonnier", 2.0),
                                            LossTerm("gradient", 2.0)]
    for bad, message in (("l3", "unknown loss 'l3'"), ("vgg:x", "bad loss weight"), ("l1:-1", ">= 0"),
                         ("l1:nan", "finite"), ("", "no loss given")):
        with pytest.raises(InputError, match=message):
            parse_losses([bad])


def test_objective_weighted_sum_and_flipped_term() -> None:
    a, b = images()
    c, _ = images(seed=1)
    objective = Objective(parse_losses(["l1:2", "ssim:0.5"]))
    total, terms = objective(a, b)
    assert set(terms) == {"l1", "ssim"} and not objective.needs_flipped
    assert float(total) == pytest.approx(2 * float(l1_loss(a, b)) + 0.5 * float(ssim_loss(a, b)), rel=1e-6)
    dsepconv = Objective(parse_losses(["dsepconv"]))
    assert dsepconv.needs_flipped
    total, terms = dsepconv(a, b, flipped=c)
    assert float(terms["flip-charbonnier"]) == pytest.approx(float(charbonnier_loss(c, b)), rel=1e-6)
    assert float(total) == pytest.approx(float(charbonnier_loss(a, b) + charbonnier_loss(c, b) + gradient_loss(a, b)),
                                         rel=1e-6)
    with pytest.raises(ValueError, match="flipped"):
        dsepconv(a, b)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Randomly initialised VGG-19 weights under torchvision's key names (classifier included)."""
    torch.manual_seed(0)
    features = VGG19Features().features
    state = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # the classifier is ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path


def test_vgg19_layout_matches_torchvision() -> None:
    keys = set(VGG19Features().features.state_dict())
    assert keys == {f"{i}.{p}" for i in VGG19_CONVS for p in ("weight", "bias")}
    network = VGG19Features()
    assert isinstance(network.features[26], torch.nn.ReLU) and len(network.features) == 27  # relu4_4 last
    assert network.features[25].out_channels == 512


def test_vgg_loss_with_random_weights(vgg_file: Path) -> None:
    objective = build_objective(["vgg"], vgg_weights=vgg_file)
    features = objective.vgg.features
    a, b = images(shape=(2, 3, 32, 32))
    assert features(a).shape == (2, 512, 4, 4)
    assert float(objective(a, a)[0]) == 0.0
    # By hand: the same layers applied with F.conv2d from the saved file.
    state = torch.load(vgg_file, weights_only=True)

    def relu4_4(x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = (x - mean) / std
        for i in VGG19_CONVS:
            if i in (5, 10, 19):
                x = F.max_pool2d(x, 2)
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))
        return x

    expected = (relu4_4(a) - relu4_4(b)).pow(2).flatten(1).sum(1).mean()
    total, terms = objective(a, b)
    assert float(terms["vgg"]) == pytest.approx(float(expected), rel=1e-4)
    a.requires_grad_(True)
    objective(a, b)[0].backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in features.parameters())


def test_vgg_weights_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg_file: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(InputError, match=r"--vgg-weights FILE .*vgg19-dcbb9e9d\.pth"):
        build_objective(["l1", "vgg:1e-5"])
    build_objective(["l1"])  # no VGG needed, no error
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(vgg_file.read_bytes())
    assert find_vgg19_weights() == cached  # torchvision's download cache is used when present
    with pytest.raises(InputError, match="not found"):
        build_objective(["vgg"], vgg_weights=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(InputError, match="not a readable"):
        build_objective(["vgg"], vgg_weights=garbage)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(InputError, match="not a torchvision VGG-19 state dict"):
        build_objective(["vgg"], vgg_weights=wrong)
