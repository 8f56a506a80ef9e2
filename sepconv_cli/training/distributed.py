"""A run's processes: this one's rank and device (``torchrun`` or alone), the few
collective operations the loop needs, and the sampler that splits the data among them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from sepconv_cli.engine import GPU_SECTION
from sepconv_cli.errors import DeviceError


@dataclass
class Distributed:
    """This process's place in the run: rank, world size and device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(option: str, local_rank: int = 0) -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N``; ``auto`` and ``cuda`` pick GPU ``local_rank``."""
    option = option.strip().lower()
    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    if option == "cpu":
        return torch.device("cpu")
    if option.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {option}: PyTorch sees no CUDA GPU (README.md, section '{GPU_SECTION}')")
        device = torch.device(f"cuda:{local_rank}") if option == "cuda" else torch.device(option)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s)")
        return device
    raise DeviceError(f"unknown device '{option}' (auto, cpu, cuda or cuda:N)")


def setup_distributed(device_option: str) -> Distributed:
    """Join torchrun's process group when WORLD_SIZE > 1; otherwise a one-process 'group'."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_option, local_rank)
    owns = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Distributed(rank, world, local_rank, device, owns)


class EpochSampler(DistributedSampler):
    """A DistributedSampler (also for one process) that can begin part-way through an epoch."""

    def __init__(self, dataset: Dataset, world: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
