"""An exponential moving average (EMA) of a network's weights, for validation and export.

Fine-tuning already-good weights with small batches is noisy: the held-out score moves by
a few tenths of a dB from one validation to the next, and a checkpoint picked by it is
picked on that noise. An average of the weights over the last few hundred steps is a
better network than any one of them and changes slowly, so its scores mean something
(as in timm's ModelEmaV2, RIFE and EMA-VFI training, diffusion models). The live weights
train as before; the average only follows them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv_cli.errors import WeightsError
from sepconv_cli.models.registry import load_weights, model_config, read_weights_file, save_weights


def warm_decay(decay: float, updates: int) -> float:
    """The decay of the update after ``updates`` earlier ones: ``min(decay, (1 + n) / (10 + n))``.

    The TensorFlow/timm warm-up: with the full decay from the first step the average would
    be mostly the starting weights for thousands of steps (0.999 keeps 37 % of them after
    1000); ramping it up lets the average forget the start at about the rate it fills.
    """
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """A shadow copy of ``network`` whose parameters are an EMA of the network's.

    ``module`` is a full network (same class, device and memory format), so it validates
    and exports like the network itself; it starts as an exact copy (``updates`` 0).
    Buffers are copied, not averaged: they are statistics or constants, not weights.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(network).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Move the average towards ``network``'s weights (after an optimizer step)."""
        decay = warm_decay(self.decay, self.updates)
        averaged = list(self.module.parameters())
        live = [p.detach() for p in network.parameters()]
        if len(averaged) != len(live):
            raise ValueError(f"the average holds {len(averaged)} parameters, the network {len(live)}")
        # lerp(a, b, w) = a + w (b - a) = decay * a + (1 - decay) * b, in one fused call per device.
        torch._foreach_lerp_(averaged, live, 1.0 - decay)
        for mine, theirs in zip(self.module.buffers(), network.buffers()):
            mine.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores to continue the average exactly (tensors on the CPU)."""
        return {"decay": self.decay, "updates": self.updates,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s output; the decay stays this average's own."""
        self.module.load_state_dict(state["state"])
        self.updates = int(state["updates"])


def average_weights(paths: Sequence[str | Path]) -> nn.Module:
    """The uniform average of several weights files of one model and config (stochastic
    weight averaging over a run's late checkpoints, Izmailov et al., 2018).

    Picking one checkpoint by a small held-out set picks its noise; the average of the
    checkpoints along one run needs no picking and is usually at least as good as the
    best of them. Integer buffers (counters) are taken from the last file.
    """
    if not paths:
        raise WeightsError("no weights files to average")
    networks = [load_weights(path) for path in paths]
    first = networks[0]
    for path, network in zip(paths, networks):
        if network.name != first.name or model_config(network) != model_config(first):
            raise WeightsError(f"{path} holds {network.name} {model_config(network)}, not the "
                               f"{first.name} {model_config(first)} of {paths[0]}: only one network's weights average")
    states = [network.state_dict() for network in networks]
    merged = {key: torch.stack([state[key].double() for state in states]).mean(0).to(value.dtype)
              if value.is_floating_point() else states[-1][key] for key, value in states[0].items()}
    first.load_state_dict(merged)
    return first


def snapshot_path(run_dir: Path, step: int) -> Path:
    """Where ``sepconv train --average-from`` keeps the exported weights of ``step``."""
    return run_dir / "snapshots" / f"step{step:07d}.pt"


def snapshots(run_dir: Path, from_step: int = 0) -> list[Path]:
    """The run's snapshots from ``from_step`` on, in step order."""
    found = (run_dir / "snapshots").glob("step*.pt")
    return sorted(path for path in found if path.stem[4:].isdigit() and int(path.stem[4:]) >= from_step)


def save_average(sources: Sequence[str | Path], out: str | Path) -> Path:
    """``average_weights(sources)`` written to ``out``, its metadata naming its members and
    their steps (and the last step, so the average reads as trained weights)."""
    network = average_weights(sources)
    steps = [read_weights_file(source)["metadata"].get("step") for source in sources]
    metadata: dict[str, Any] = {"averaged": [Path(source).name for source in sources], "averaged_steps": steps}
    if all(isinstance(step, int) for step in steps):
        metadata["step"] = max(steps)
    save_weights(network, out, metadata=metadata)
    return Path(out)
