"""Running the network on a loader's batches: the batch as the network takes it
(``Inputs``, with the neighbour flows of five-frame windows), one forward pass whatever
the model, and the held-out scores and sample images a run records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sepconv_cli.data.dataset import to_frames, to_window_frames
from sepconv_cli.flow import Neighbours, neighbour_flows
from sepconv_cli.metrics import psnr, ssim


def split_batch(batch: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A loader's batch as (frames, middle times or None): timed datasets yield pairs,
    window datasets triples (frames, times, neighbours valid)."""
    if isinstance(batch, (list, tuple)):
        return batch[0], batch[1]
    return batch, None


@dataclass
class Inputs:
    """A batch as the network takes it: the pair, the frame to predict, its times, and
    (window batches: five frames each) the flows to the frames around the pair."""

    frame1: torch.Tensor
    middle: torch.Tensor
    frame2: torch.Tensor
    times: torch.Tensor | None
    neighbours: Neighbours | None = None


def batch_inputs(batch: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...], device: torch.device | str,
                 channels_last: bool = False) -> Inputs:
    """``Inputs`` of a loader batch; for windows [before, frame 0, middle, frame 1, after]
    the DIS flows F(0→before) and F(1→after) are computed here, on the crops, for the rows
    whose neighbours exist (the others get zeros and the network's linear motion)."""
    frames, times = split_batch(batch)
    if frames.shape[1] == 3:
        frame1, middle, frame2 = to_frames(frames, device, channels_last)
        return Inputs(frame1, middle, frame2, times)
    before, frame1, middle, frame2, after = to_window_frames(frames, device, channels_last)
    valid = batch[2].to(device).float()  # type: ignore[index]
    f0m, f12 = torch.zeros_like(frame1[:, :2]), torch.zeros_like(frame1[:, :2])
    rows = valid.nonzero().flatten()
    if rows.numel():
        found = neighbour_flows(before[rows], frame1[rows], frame2[rows], after[rows])
        f0m[rows], f12[rows] = found.f0m, found.f12
    return Inputs(frame1, middle, frame2, times, Neighbours(f0m, f12, valid=valid))


def run_model(model: nn.Module, frame1: torch.Tensor, frame2: torch.Tensor, times: torch.Tensor | None,
              neighbours: Neighbours | None = None) -> torch.Tensor:
    """The middle frame; models that take any time get the batch's times (0.5 when None),
    and four-frame models the neighbours."""
    core = getattr(model, "module", model)  # DDP wraps the network
    if getattr(core, "any_time", False):
        extra = {"neighbours": neighbours} if neighbours is not None else {}
        return model(frame1, frame2, t=0.5 if times is None else times.to(frame1.device), **extra)
    return model(frame1, frame2)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, channels_last: bool = False) -> dict[str, float]:
    """Mean PSNR, SSIM (predictions rounded to 8 bits, as ``sepconv evaluate``) and L1 over ``loader``."""
    was_training = model.training
    model.eval()
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "l1": []}
    for batch in loader:
        x = batch_inputs(batch, device, channels_last)
        middle = x.middle
        prediction = run_model(model, x.frame1, x.frame2, x.times, x.neighbours).float().clamp(0, 1).mul(255).round().div(255)
        scores["psnr"].append(psnr(prediction, middle).clamp(max=100).float().cpu())
        scores["ssim"].append(ssim(prediction, middle).float().cpu())
        scores["l1"].append((prediction - middle).abs().flatten(1).mean(1).cpu())
    model.train(was_training)
    return {name: float(torch.cat(values).mean()) for name, values in scores.items() if values}


@torch.no_grad()
def predict_samples(model: nn.Module, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                    device: torch.device) -> list[np.ndarray]:
    """(N, 3, 3, S, S) uint8 triplets → N arrays (4, S, S, 3) uint8: frame 0, frame 1, prediction, truth."""
    was_training = model.training
    model.eval()
    x = batch_inputs(batch, device)
    prediction = run_model(model, x.frame1, x.frame2, x.times, x.neighbours).float()
    model.train(was_training)
    stack = torch.stack([x.frame1, x.frame2, prediction, x.middle], 1)  # (N, 4, 3, S, S)
    images = stack.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    return list(images)
