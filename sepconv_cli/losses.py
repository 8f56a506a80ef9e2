"""Training objectives: pixel losses, SSIM, VGG-19 features, DSepConv's gradient loss.

Every loss takes a prediction and a target, (B, 3, H, W) floats in [0, 1], and returns a
scalar averaged over the batch. An ``Objective`` is a weighted sum of named terms, built
from specs such as ``l1``, ``vgg:1e-5`` or ``l1+vgg:1e-5`` (``name[:weight]``, terms joined
by ``+`` or given as several specs)::

    objective = build_objective(["l1", "vgg:1e-5"], vgg_weights="vgg19-dcbb9e9d.pth")
    total, terms = objective(prediction, target)      # terms: {"l1": ..., "vgg": ...}

Terms:

==================  ===========================================================================
``l1``              mean |pred - gt| (SepConv-L1, the paper's best PSNR)
``l2``              mean (pred - gt)²
``charbonnier``     mean sqrt((pred - gt)² + ε²), ε = 1e-3 (DSepConv)
``ssim``            1 - SSIM (Gaussian window 11, σ 1.5; ``metrics.ssim``)
``vgg``             squared L2 distance of VGG-19 relu4_4 features, summed over features and
                    averaged over the batch, as SepConv's ``‖φ(I) - φ(I_gt)‖²`` (ImageNet-
                    normalised input). It is about 1e5 times the L1 term, hence ``vgg:1e-5``.
``gradient``        DSepConv's gradient loss: mean over the four neighbour directions (up, down,
                    left, right) of | |Δ pred| - |Δ gt| |
``flip-charbonnier`` Charbonnier of the prediction from the temporally flipped input
                    (``model(frame2, frame1)``); the trainer computes it only when asked
``dsepconv``        shorthand for DSepConv's objective:
                    ``charbonnier + flip-charbonnier + gradient`` (weights 1, 1, 1; a weight
                    given to ``dsepconv:w`` scales all three)
==================  ===========================================================================

The VGG-19 network is built here with torchvision's layer numbering, so a torchvision
``vgg19`` state dict (``features.N.weight``) loads directly; torchvision itself is not
needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sepconv_cli.errors import InputError
from sepconv_cli.metrics import ssim
from sepconv_cli.serialization import load_code_free

CHARBONNIER_EPSILON = 1e-3

# torchvision's file name for the ImageNet VGG-19 weights (VGG19_Weights.IMAGENET1K_V1).
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
# VGG-19 ("configuration E") feature layers up to relu4_4; "M" is a 2×2 max pool.
VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).abs().mean()


def l2_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).pow(2).mean()


def charbonnier_loss(prediction: torch.Tensor, target: torch.Tensor, epsilon: float = CHARBONNIER_EPSILON) -> torch.Tensor:
    """Mean of sqrt(d² + ε²): L1 away from zero, smooth (differentiable) at zero."""
    return torch.sqrt((prediction - target).pow(2) + epsilon**2).mean()


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM, window 11 (0 for identical images)."""
    return 1 - ssim(prediction, target, data_range=1.0, window=11).mean()


def _neighbour_differences(image: torch.Tensor) -> list[torch.Tensor]:
    """|I(x) - I(x + n)| for n = up, down, left, right; replicated borders (difference 0)."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    h, w = image.shape[-2:]
    shifted = (
        padded[..., 0:h, 1 : w + 1],  # up
        padded[..., 2 : h + 2, 1 : w + 1],  # down
        padded[..., 1 : h + 1, 0:w],  # left
        padded[..., 1 : h + 1, 2 : w + 2],  # right
    )
    return [(image - s).abs() for s in shifted]


def gradient_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DSepConv's gradient loss: mean over 4 directions of | |Δpred| - |Δgt| |."""
    pairs = zip(_neighbour_differences(prediction), _neighbour_differences(target))
    return torch.stack([(p - t).abs().mean() for p, t in pairs]).mean()


# --------------------------------------------------------------------------------------
# VGG-19


class VGG19Features(nn.Module):
    """VGG-19's convolutional layers up to relu4_4, numbered as torchvision's ``features``.

    ``forward(image)``: (B, 3, H, W) in [0, 1] → (B, 512, H/8, W/8) relu4_4 activations
    (the ImageNet normalisation is applied inside). Parameters are frozen.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG19_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)  # indices 0..26, as torchvision's features[:27]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:  # frozen: always in eval mode
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features((image - self.mean) / self.std)

    @classmethod
    def from_file(cls, path: str | Path) -> VGG19Features:
        """Load a torchvision-format VGG-19 state dict (``features.N.*``; the classifier is ignored)."""
        state = load_code_free(path, what="VGG-19 state dict", error=InputError)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        network = cls()
        wanted = network.features.state_dict()
        if not isinstance(state, dict):
            raise InputError(f"{path} is not a VGG-19 state dict")
        found = {key[len("features."):]: value for key, value in state.items()
                 if isinstance(key, str) and key.startswith("features.") and key[len("features."):] in wanted}
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise InputError(f"{path} is not a torchvision VGG-19 state dict (missing features.{missing[0]})")
        for key, value in found.items():
            if tuple(value.shape) != tuple(wanted[key].shape):
                raise InputError(f"{path}: features.{key} has shape {tuple(value.shape)}, VGG-19 has {tuple(wanted[key].shape)}")
        network.features.load_state_dict(found)
        return network


def find_vgg19_weights(path: str | Path | None = None) -> Path:
    """``path`` if given, else torchvision's cached download, else an ``InputError`` saying how."""
    if path is not None:
        return Path(path)
    # Where torchvision's vgg19(weights=IMAGENET1K_V1) downloads to ($TORCH_HOME/hub/checkpoints).
    hub = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    if hub.is_file():
        return hub
    raise InputError(
        f"the vgg loss needs ImageNet VGG-19 weights: download {VGG19_URL} and pass --vgg-weights FILE "
        f"(or put it at {hub})"
    )


class VGGLoss(nn.Module):
    """Squared L2 distance of relu4_4 features, summed over features, averaged over the batch."""

    def __init__(self, features: VGG19Features) -> None:
        super().__init__()
        self.features = features

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            wanted = self.features(target)
        return (self.features(prediction) - wanted).pow(2).flatten(1).sum(1).mean()


# --------------------------------------------------------------------------------------
# Specs and the objective

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TERMS = ("l1", "l2", "charbonnier", "ssim", "vgg", "gradient", "flip-charbonnier")
SHORTHANDS = {"dsepconv": (("charbonnier", 1.0), ("flip-charbonnier", 1.0), ("gradient", 1.0))}
FLIPPED_TERMS = frozenset({"flip-charbonnier"})


@dataclass(frozen=True)
class LossTerm:
    name: str
    weight: float

    def __str__(self) -> str:
        return f"{self.name}:{self.weight:g}"


def default_losses(model: str) -> list[str]:
    """The paper's objective for ``model``: L1 for SepConv, DSepConv's own for DSepConv."""
    return ["dsepconv"] if model == "dsepconv" else ["l1"]


def parse_losses(specs: Sequence[str]) -> list[LossTerm]:
    """``["l1", "vgg:1e-5"]`` or ``["l1+vgg:1e-5"]`` → terms; a repeated name adds its weights."""
    weights: dict[str, float] = {}
    known = ", ".join((*TERMS, *SHORTHANDS))
    for spec in specs:
        for part in str(spec).replace(",", "+").split("+"):
            part = part.strip().lower()
            if not part:
                continue
            name, _, weight_text = part.partition(":")
            name = name.strip()
            try:
                weight = float(weight_text) if weight_text.strip() else 1.0
            except ValueError:
                raise InputError(f"bad loss weight in '{part}' (expected NAME or NAME:WEIGHT, e.g. vgg:1e-5)") from None
            if not (weight == weight and abs(weight) != float("inf")) or weight < 0:
                raise InputError(f"loss weight in '{part}' must be a finite number >= 0")
            expanded = [(n, w * weight) for n, w in SHORTHANDS[name]] if name in SHORTHANDS else [(name, weight)]
            for term, w in expanded:
                if term not in TERMS:
                    raise InputError(f"unknown loss '{name}' (known: {known})")
                weights[term] = weights.get(term, 0.0) + w
    if not weights:
        raise InputError(f"no loss given (known: {known})")
    return [LossTerm(name, weight) for name, weight in weights.items()]


class Objective(nn.Module):
    """A weighted sum of loss terms.

    ``forward(prediction, target, flipped=None)`` → ``(total, {name: unweighted value})``;
    ``flipped`` is the prediction from the temporally flipped input, needed when
    ``needs_flipped`` (a ``flip-charbonnier`` term). Values are computed in float32.
    """

    def __init__(self, terms: Sequence[LossTerm], vgg: VGG19Features | None = None) -> None:
        super().__init__()
        self.terms = list(terms)
        self.vgg = VGGLoss(vgg) if vgg is not None else None
        if any(t.name == "vgg" for t in self.terms) and self.vgg is None:
            raise InputError("the vgg loss needs VGG-19 weights (--vgg-weights FILE)")
        self._functions: dict[str, LossFn] = {
            "l1": l1_loss, "l2": l2_loss, "charbonnier": charbonnier_loss, "ssim": ssim_loss,
            "gradient": gradient_loss,
        }

    @property
    def needs_flipped(self) -> bool:
        return any(t.name in FLIPPED_TERMS for t in self.terms)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def describe(self) -> str:
        return " + ".join(str(t) for t in self.terms)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor,
                flipped: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prediction, target = prediction.float(), target.float()
        values: dict[str, torch.Tensor] = {}
        total = prediction.new_zeros(())
        for term in self.terms:
            if term.name == "vgg":
                value = self.vgg(prediction, target)
            elif term.name == "flip-charbonnier":
                if flipped is None:
                    raise ValueError("the flip-charbonnier term needs the prediction from the flipped input")
                value = charbonnier_loss(flipped.float(), target)
            else:
                value = self._functions[term.name](prediction, target)
            values[term.name] = value
            total = total + term.weight * value
        return total, values


def build_objective(specs: Sequence[str], vgg_weights: str | Path | None = None) -> Objective:
    """Parse ``specs`` and load what the terms need (VGG-19 only when ``vgg`` is used)."""
    terms = parse_losses(specs)
    vgg = None
    if any(t.name == "vgg" for t in terms):
        vgg = VGG19Features.from_file(find_vgg19_weights(vgg_weights))
    return Objective(terms, vgg)
