"""Model name → (class, config), and the weights file format.

A weights file is a ``torch.save`` of plain containers (str, int, float, bool, lists,
dicts, tensors) so that ``torch.load(weights_only=True)`` opens it without running
code. It names its model and holds the full config, so ``--weights`` alone rebuilds
the network. Large convolution weights may be stored as per-output-channel int8 with
one float scale a channel and are dequantised at load: that quarters the file (the
21.7 M-parameter SepConv is 87 MB in fp32, 22 MB this way).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv_cli.errors import WeightsError
from sepconv_cli.models.dsepconv import DSepConv, DSepConvConfig
from sepconv_cli.models.flowsep import FlowSep, FlowSepConfig
from sepconv_cli.models.sepconv import SepConv, SepConvConfig
from sepconv_cli.serialization import load_code_free

FORMAT = "sepconv-weights"
FORMAT_VERSION = 1

# Tensors smaller than this stay in float32: biases and tiny layers gain nothing.
QUANTISE_MIN_ELEMENTS = 4096


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: type[nn.Module]
    config_cls: type
    summary: str


MODELS: dict[str, ModelSpec] = {
    "flowsep": ModelSpec("flowsep", FlowSep, FlowSepConfig, "FlowSep: DIS flow-guided 3×3 deformable separable kernels, any time t (the default)"),
    "sepconv": ModelSpec("sepconv", SepConv, SepConvConfig, "SepConv: 51-tap separable kernels (±25 px motion)"),
    "dsepconv": ModelSpec("dsepconv", DSepConv, DSepConvConfig, "DSepConv: 5×5 separable kernels with learned tap offsets"),
}


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise WeightsError(f"unknown model '{name}' (known: {', '.join(sorted(MODELS))})") from None


def build_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model ``name`` with ``config`` overriding its defaults."""
    spec = _spec(name)
    known = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = set(config or {}) - known
    if unknown:
        raise WeightsError(f"unknown {name} config option(s): {', '.join(sorted(unknown))}")
    return spec.cls(spec.config_cls(**(config or {})))


def model_config(model: nn.Module) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(model.config).items()}


def quantise(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight ≈ q * scale``."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return {"q": q.reshape(weight.shape), "scale": scale}


def dequantise(entry: dict[str, torch.Tensor]) -> torch.Tensor:
    q, scale = entry["q"], entry["scale"]
    return (q.float().reshape(q.shape[0], -1) * scale[:, None]).reshape(q.shape)


def save_weights(
    model: nn.Module, path: str | Path, *, quantised: bool | None = None, metadata: dict[str, Any] | None = None
) -> None:
    """Write ``model``'s weights and config to ``path`` (atomically: temp file + rename).

    ``quantised`` None follows the model's ``quantise_weights`` (default True): small
    networks whose outputs are sub-pixel offsets (flowsep, 1.8 MB in float32) keep float32.
    """
    if quantised is None:
        quantised = bool(getattr(model, "quantise_weights", True))
    tensors: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if quantised and value.is_floating_point() and value.dim() >= 2 and value.numel() >= QUANTISE_MIN_ELEMENTS:
            tensors[key] = quantise(value)
        else:
            tensors[key] = value.float() if value.is_floating_point() else value
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.name,
        "config": model_config(model),
        "tensors": tensors,
        "metadata": metadata or {},
    }
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    torch.save(payload, temporary)
    temporary.replace(path)


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """The checked contents of a weights file, without building a model."""
    payload = load_code_free(path, what="weights file", error=WeightsError)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a sepconv weights file (a training checkpoint? export it first)")
    if payload.get("version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has weights format version {payload.get('version')}; this sepconv reads {FORMAT_VERSION}")
    return payload


def load_weights(path: str | Path, *, model: str | None = None) -> nn.Module:
    """Build the network a weights file describes and load its weights (on the CPU).

    ``model``, when given, is the model the caller expects; a file for another model is
    an error rather than a silent switch.
    """
    payload = read_weights_file(path)
    name = payload.get("model")
    if model is not None and name != model:
        raise WeightsError(f"{path} holds weights for '{name}', not '{model}'")
    network = build_model(name, payload.get("config"))
    state = {
        key: dequantise(value) if isinstance(value, dict) else value for key, value in payload["tensors"].items()
    }
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match the {name} network it names ({str(exc).splitlines()[0]})") from None
    network.eval()
    return network


# FlowSep options that only add inputs and head channels, all starting at zero weight.
GROWING_OPTIONS = frozenset({"quadratic", "hedge"})


def widened(network: nn.Module, changes: dict[str, Any]) -> nn.Module | None:
    """``network`` grown by ``changes`` to its config where that keeps what it computes
    (today: a FlowSep with ``quadratic`` and/or ``hedge`` turned on, its new weights at zero);
    None for any other change."""
    config = model_config(network)
    differing = {k: v for k, v in changes.items() if config.get(k) != v}
    if not isinstance(network, FlowSep) or not differing:
        return None
    if not set(differing) <= GROWING_OPTIONS or not all(differing.values()):
        return None
    from sepconv_cli.models.flowsep import widen_state_dict

    grown = build_model("flowsep", {**config, **dict.fromkeys(differing, True)})
    grown.load_state_dict(widen_state_dict(network.state_dict(), grown))
    return grown


def weights_dir() -> Path:
    """Where default weights live: ``$SEPCONV_WEIGHTS_DIR``, else the checkout's ``weights/``."""
    import os

    override = os.environ.get("SEPCONV_WEIGHTS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "weights"


def default_weights(model: str) -> Path:
    """The shipped weights file for ``model``, or a WeightsError that says what to do."""
    _spec(model)
    path = weights_dir() / f"{model}.pt"
    if not path.is_file():
        raise WeightsError(
            f"no default weights for '{model}' at {path}; pass --weights PATH "
            "(a file written by 'sepconv train'), or set SEPCONV_WEIGHTS_DIR"
        )
    return path
