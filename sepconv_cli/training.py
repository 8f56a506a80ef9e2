"""Training: the loop, checkpoints and resume, validation, distributed set-up, export.

``train(config, run_dir)`` trains the model ``config.model`` on a patch cache (or on
procedural scenes rendered on the fly) and writes, from rank 0 only::

    RUN_DIR/
      config.json              the resolved configuration (TrainConfig, full model config, data)
      checkpoints/last.ckpt    model + optimizer + scheduler + scaler + step/epoch + RNG states;
      checkpoints/best.ckpt    ... at the best validation PSNR so far (both written atomically)
      metrics.jsonl            one JSON row per log interval ("train") and validation ("val")
      metrics.csv              the same rows as a table
      curves.png               training loss and validation PSNR/SSIM against the step
      samples/epoch_XXX.png    fixed validation triplets: frame 0 | frame 1 | prediction | truth
      weights.pt               the final network in the compact format ``interpolate --weights`` reads
      summary.json             how the run ended (step, reason, best PSNR, per-rank digests)

``train(config, run_dir, resume=True)`` continues from ``last.ckpt`` exactly: the data
order and augmentation are functions of (seed, epoch, index) (see ``data.dataset``), so K
steps, a resume and N - K more steps give the same parameters as N steps in one go.

Distributed: under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set) every process joins a
process group (NCCL on CUDA, gloo on CPU), the model is wrapped in
DistributedDataParallel and the data split by a DistributedSampler. ``batch_size`` is the
*global* batch, divided among the processes, so a run's numbers do not depend on how
many processes share it. Each step one small all-reduce carries the loss (for logging
and the NaN check) and the stop flags (time budget, Ctrl-C), so all ranks stop together.

Nothing here prints: messages go to ``note(text)`` and progress to ``progress(TrainProgress)``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sepconv_cli import __version__
from sepconv_cli.engine import GPU_SECTION
from sepconv_cli.data.dataset import MixedDataset, SceneDataset, TripletDataset, split_cache, to_frames, to_window_frames
from sepconv_cli.errors import DeviceError, InputError, OutputError, SepconvError, WeightsError
from sepconv_cli.flow import Neighbours, neighbour_flows
from sepconv_cli.losses import Objective, build_objective, default_losses
from sepconv_cli.metrics import psnr, ssim
from sepconv_cli.models.registry import MODELS, build_model, load_weights, model_config, save_weights, widened
from sepconv_cli.serialization import load_code_free

CHECKPOINT_FORMAT = "sepconv-checkpoint"
CHECKPOINT_VERSION = 1
PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = {"adamax": torch.optim.Adamax, "adam": torch.optim.Adam}
# Options a resumed run may change: when and how it stops and reports, not what it learns.
RESUMABLE = frozenset({"epochs", "max_steps", "time_budget", "workers", "device", "log_every", "val_every",
                       "checkpoint_every", "vgg_weights"})


class TrainingError(SepconvError):
    """Training cannot go on (a NaN loss, diverged processes)."""


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved in ``config.json`` and every checkpoint.

    Data: ``data`` is a patch cache folder (None: ``default_cache_dir()``); ``synthetic`` a
    folder of photographs to render ``scenes_per_epoch`` procedural scenes from instead
    (and ``val_scenes`` fixed ones for validation). ``crop``: training crop side (px,
    divisible by the model's stride 32). ``val_fraction``/``val_max``: held-out share of
    the cache and the most triplets validated.
    Optimisation: ``optimizer`` (adamax, as in the SepConv paper, or adam), ``lr``; a linear
    warm-up from lr/warmup_steps to lr over the first ``warmup_steps`` steps (fine-tuning a
    converged network needs one: AdaMax's first steps move every weight by about lr whatever
    its gradient, because its denominator starts at |g|); step decay by ``lr_decay_factor``
    every ``lr_decay_epochs`` epochs (0: constant). ``batch_size`` is global (all processes).
    Stopping: after ``epochs`` epochs, ``max_steps`` optimizer steps or ``time_budget``
    seconds, whichever comes first (None: no limit).
    ``losses``: specs for ``losses.parse_losses`` (empty: the model's paper objective).
    ``val_data``: a patch cache of held-out footage to validate on (and keep the best
    checkpoint by) instead of the training data's own split; with both ``data`` and
    ``synthetic`` the two are mixed, about half and half (cache triplets repeated to match).
    ``scene_size``/``max_motion``: procedural scenes' side and largest motion (px);
    ``h264``: share of scenes that go through a libx264 round trip; ``clean_target``: noise,
    JPEG and H.264 on the two inputs only (else on all three frames, as in footage, where
    the frame to predict is compressed too); ``static_fraction``: share of scenes that do
    not move; ``elastic``: share of scenes that also deform non-rigidly. Models that take any time t (flowsep) get scenes at random t.
    ``init``: weights file to start from (fine-tuning); ``validate_init`` scores it on the
    validation data before the first step, so that it competes for the best checkpoint
    (a fine-tuning run that never beats its start exports the start). ``model_config``: overrides of the
    model's defaults (a tiny network for tests, a different kernel size).
    Devices: ``precision`` fp32, bf16 or fp16 (autocast; fp16 with a gradient scaler and
    only on CUDA); ``channels_last`` None means on for CUDA.
    """

    model: str = "sepconv"
    model_config: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    synthetic: str | None = None
    scenes_per_epoch: int = 16384
    val_scenes: int = 64
    val_data: str | None = None
    scene_size: int = 150
    max_motion: float = 40.0
    h264: float = 0.0
    clean_target: bool = False
    static_fraction: float = 0.05
    elastic: float = 0.0
    losses: list[str] = field(default_factory=list)
    vgg_weights: str | None = None
    init: str | None = None
    validate_init: bool = False
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adamax"
    warmup_steps: int = 0
    lr_decay_epochs: int = 0
    lr_decay_factor: float = 0.5
    epochs: int | None = 50
    max_steps: int | None = None
    time_budget: float | None = None
    crop: int = 128
    val_fraction: float = 0.05
    val_max: int = 512
    val_every: int = 0
    samples: int = 4
    log_every: int = 20
    checkpoint_every: int = 1000
    seed: int = 0
    workers: int = 4
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainProgress:
    """What the progress callback receives after every step (rank 0 only)."""

    step: int
    total_steps: int | None
    epoch: int
    loss: float
    samples_per_s: float
    val_psnr_start: float | None = None  # the first validation's PSNR (the ``init`` weights' with validate_init)
    val_psnr_best: float | None = None


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    reason: str  # "epochs", "max-steps", "time-budget", "interrupted"
    best_psnr: float | None
    weights: Path
    samples_per_s: float
    best_step: int | None = None
    start_psnr: float | None = None  # the first validation's PSNR


Note = Callable[[str], None]
ProgressFn = Callable[[TrainProgress], None]


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# --------------------------------------------------------------------------------------
# Distributed set-up


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


# --------------------------------------------------------------------------------------
# Files


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a failed write keeps the old file."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); the previous file is kept") from None


def _atomic_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from None


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checked training checkpoint (loaded without running code)."""
    payload = load_code_free(path, what="checkpoint", error=InputError, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a sepconv training checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path} has checkpoint version {payload.get('version')}; this sepconv reads {CHECKPOINT_VERSION}")
    return payload


def export_checkpoint(checkpoint: str | Path, path: str | Path) -> Path:
    """Write the network of a training checkpoint as a weights file (no optimizer state)."""
    data = read_checkpoint(checkpoint)
    network = build_model(data["model"], data.get("model_config"))
    network.load_state_dict(data["model_state"])
    save_weights(network, path, metadata={
        "trained_by": f"sepconv train {data.get('sepconv_version', __version__)}", "step": data.get("step"),
        "epoch": data.get("epoch"), "best_val_psnr": (data.get("best") or {}).get("psnr"),
        "best_step": (data.get("best") or {}).get("step"),
    })
    return Path(path)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The configuration of the run in ``run_dir`` (from its last checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"--resume {run_dir}: no such run folder")
    payload = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return TrainConfig.from_dict(payload["config"])


def _rng_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, key.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal digests mean equal weights."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cv2() -> Any | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


class RunWriter:
    """Writes a run's files (rank 0 only): metrics, plots, samples, checkpoints, weights."""

    def __init__(self, run_dir: Path, fields: list[str], note: Note) -> None:
        self.run_dir = run_dir
        self.fields = ["kind", "step", "epoch", "time", "lr", "loss", *fields, "samples_per_s", "psnr", "ssim", "val_l1"]
        self.records: list[dict[str, Any]] = []
        self.note = note
        self._warned_no_cv2 = False
        try:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "samples").mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {run_dir} ({exc.strerror or exc})") from None

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        _atomic_text(self.run_dir / name, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")

    def reload_metrics(self, up_to_step: int) -> None:
        """On resume: keep the rows up to the checkpoint's step (later ones are redone)."""
        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(row, dict) and row.get("step", 0) <= up_to_step:
                    self.records.append(row)
        _atomic_text(path, "".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, row: dict[str, Any]) -> None:
        self.records.append(row)
        try:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {self.run_dir / 'metrics.jsonl'} ({exc.strerror or exc})") from None

    def flush_tables(self) -> None:
        """Rewrite metrics.csv and curves.png from the rows so far."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.records:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        _atomic_text(self.run_dir / "metrics.csv", buffer.getvalue())
        cv2 = self._images()
        if cv2 is not None:
            image = plot_curves(self.records)
            if not cv2.imwrite(str(self.run_dir / "curves.png"), image):
                raise OutputError(f"cannot write {self.run_dir / 'curves.png'}")

    def save_samples(self, epoch: int, rows: list[np.ndarray]) -> None:
        cv2 = self._images()
        if cv2 is None or not rows:
            return
        path = self.run_dir / "samples" / f"epoch_{epoch:03d}.png"
        if not cv2.imwrite(str(path), sample_sheet(rows)[..., ::-1]):
            raise OutputError(f"cannot write {path}")

    def _images(self) -> Any | None:
        cv2 = _cv2()
        if cv2 is None and not self._warned_no_cv2:
            self._warned_no_cv2 = True
            self.note("OpenCV is not installed: no curves.png or sample images (pip install opencv-python-headless)")
        return cv2


# --------------------------------------------------------------------------------------
# Images (numpy + OpenCV; no plotting library)


def sample_sheet(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of (4, S, S, 3) uint8 RGB images (frame 0, frame 1, prediction, truth) → one labelled RGB sheet."""
    cv2 = _cv2()
    size = rows[0].shape[1]
    gap = 4
    header = 18
    width = 4 * size + 3 * gap
    sheet = np.full((header + len(rows) * (size + gap), width, 3), 255, np.uint8)
    for col, label in enumerate(("frame 0", "frame 1", "prediction", "ground truth")):
        if cv2 is not None:
            (text_width, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            scale = 0.4 * min(1.0, (size - 4) / text_width)
            cv2.putText(sheet, label, (col * (size + gap) + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
    for r, row in enumerate(rows):
        top = header + r * (size + gap)
        for col in range(4):
            left = col * (size + gap)
            sheet[top : top + size, left : left + size] = row[col]
    return sheet


def plot_curves(records: list[dict[str, Any]], width: int = 960, height: int = 360) -> np.ndarray:
    """Training loss (log scale) and validation PSNR against the step, as a BGR image."""
    import cv2

    image = np.full((height, width, 3), 255, np.uint8)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    val = [(r["step"], r["psnr"]) for r in records if r.get("kind") == "val" and _finite(r.get("psnr"))]
    panels = (
        ("training loss (log scale)", [(s, math.log10(v)) for s, v in train if v > 0], (180, 90, 30), True),
        ("validation PSNR (dB)", val, (40, 40, 200), False),
    )
    half = width // 2
    for index, (title, points, colour, logarithmic) in enumerate(panels):
        x0, y0, x1, y1 = index * half + 60, 30, (index + 1) * half - 20, height - 40
        cv2.rectangle(image, (x0, y0), (x1, y1), (0, 0, 0), 1)
        cv2.putText(image, title, (x0, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        if not points:
            cv2.putText(image, "no data yet", (x0 + 10, (y0 + y1) // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (120, 120, 120), 1, cv2.LINE_AA)
            continue
        steps = np.array([p[0] for p in points], float)
        values = np.array([p[1] for p in points], float)
        s_lo, s_hi = steps.min(), max(steps.max(), steps.min() + 1)
        v_lo, v_hi = values.min(), values.max()
        if v_hi - v_lo < 1e-9:
            v_lo, v_hi = v_lo - 0.5, v_hi + 0.5
        xs = x0 + (steps - s_lo) / (s_hi - s_lo) * (x1 - x0)
        ys = y1 - (values - v_lo) / (v_hi - v_lo) * (y1 - y0)
        line = np.stack([xs, ys], 1).round().astype(np.int32)
        if len(line) > 1:
            cv2.polylines(image, [line], False, colour, 1, cv2.LINE_AA)
        for point in line if len(line) <= 50 else line[-1:]:
            cv2.circle(image, tuple(int(v) for v in point), 2, colour, -1, cv2.LINE_AA)
        font = (cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
        top, bottom = (10**v_hi, 10**v_lo) if logarithmic else (v_hi, v_lo)
        cv2.putText(image, f"{top:.3g}", (x0 - 55, y0 + 10), *font)
        cv2.putText(image, f"{bottom:.3g}", (x0 - 55, y1), *font)
        cv2.putText(image, f"step {int(s_lo)}", (x0, y1 + 16), *font)
        cv2.putText(image, f"{int(s_hi)}", (x1 - 40, y1 + 16), *font)
    return image


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# --------------------------------------------------------------------------------------
# Validation


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


# --------------------------------------------------------------------------------------
# The trainer


@contextmanager
def _graceful_stop() -> Iterator[dict[str, bool]]:
    """SIGINT/SIGTERM set a flag the loop checks after each step; a second Ctrl-C interrupts at once."""
    flag = {"stop": False}
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trainer:
    """One training run on this process; ``run()`` returns a ``TrainResult``. Use ``train``."""

    def __init__(self, config: TrainConfig, run_dir: Path, env: Distributed, *, resume: bool,
                 args: list[str], note: Note, progress: ProgressFn) -> None:
        self.config = config
        self.run_dir = run_dir
        self.env = env
        self.resume = resume
        self.args = args
        self.note = note if env.main else (lambda text: None)
        self.progress = progress if env.main else (lambda p: None)
        self.device = env.device
        self.step = 0
        self.epoch = 0
        self.epoch_step = 0
        self.best: dict[str, Any] = {"psnr": None, "step": None}
        self.start_psnr: float | None = None
        self.last_checkpoint_step: int | None = None
        self.validated_step: int | None = None
        self.trained_seconds = 0.0

    # -- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        """Everything that can fail on bad input, before the processes start working together."""
        c = self.config
        if c.model not in MODELS:
            raise InputError(f"unknown model '{c.model}' (known: {', '.join(sorted(MODELS))})")
        if c.precision not in PRECISIONS:
            raise InputError(f"unknown precision '{c.precision}' ({', '.join(PRECISIONS)})")
        if c.precision == "fp16" and self.device.type != "cuda":
            raise InputError("--precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
        if c.batch_size % self.env.world:
            raise InputError(f"--batch-size {c.batch_size} is the global batch: it must divide among {self.env.world} processes")
        for name in ("batch_size", "crop", "log_every"):
            if getattr(c, name) < 1:
                raise InputError(f"{name} must be at least 1")
        if c.epochs is None and c.max_steps is None and c.time_budget is None:
            raise InputError("give --epochs, --max-steps or --time-budget (the run would never end)")
        self.per_rank = c.batch_size // self.env.world
        self.channels_last = self.device.type == "cuda" if c.channels_last is None else bool(c.channels_last)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.precision)

        checkpoint = None
        if self.resume:
            checkpoint = read_checkpoint(self.run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
            if checkpoint.get("model") != c.model:
                raise InputError(f"{self.run_dir} is a {checkpoint.get('model')} run, not {c.model}")
        elif (self.run_dir / "checkpoints" / "last.ckpt").exists():
            raise OutputError(f"{self.run_dir} already holds a training run: continue it with --resume {self.run_dir}, "
                              "or choose another --out")

        # The network: the same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(c.seed)
        if c.init and not self.resume:
            network = load_weights(c.init, model=c.model)
            changes = {k: _plain(v) for k, v in c.model_config.items()}
            if changes and any(model_config(network).get(k) != v for k, v in changes.items()):
                # A change that keeps what the network computes (new inputs at zero weight) is a start, not a clash.
                grown = widened(network, changes)
                if grown is None:
                    raise InputError(f"--model-config differs from the configuration stored in {c.init}")
                network = grown
        else:
            try:
                network = build_model(c.model, c.model_config)
            except (TypeError, ValueError, WeightsError) as exc:
                raise InputError(f"bad --model-config for {c.model}: {exc}") from None
        # Record the full configuration, so a resume rebuilds exactly this network.
        c.model_config = model_config(network)
        stride = network.stride
        if c.crop % stride:
            raise InputError(f"--crop {c.crop} must be divisible by {stride} ({c.model} needs sides divisible by {stride})")
        self.network = network.to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

        self.objective: Objective = build_objective(c.losses or default_losses(c.model), c.vgg_weights).to(self.device)
        if c.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer '{c.optimizer}' ({', '.join(OPTIMIZERS)})")
        self.optimizer = OPTIMIZERS[c.optimizer](self.network.parameters(), lr=c.lr)
        self.scheduler = (torch.optim.lr_scheduler.StepLR(self.optimizer, c.lr_decay_epochs, c.lr_decay_factor)
                          if c.lr_decay_epochs > 0 else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.precision == "fp16")
        self._setup_data()
        if checkpoint is not None:
            self._restore(checkpoint)

    def _setup_data(self) -> None:
        c = self.config
        timed = bool(getattr(self.network, "any_time", False))
        # Four-frame models learn from windows: the frames around each pair come along.
        windows = bool(getattr(getattr(self.network, "config", None), "quadratic", False))
        if c.synthetic:
            from sepconv_cli.data.synthetic import SceneConfig

            scenes = SceneConfig(size=c.scene_size, max_motion=c.max_motion, random_time=timed,
                                 clean_target=c.clean_target, static_fraction=c.static_fraction,
                                 p_elastic=c.elastic)
            if c.crop > scenes.size:
                raise InputError(f"--crop {c.crop} is larger than the {scenes.size} px scenes (--scene-size)")
            self.data_description = f"procedural scenes from {c.synthetic}"
            self.train_set: Dataset = SceneDataset(c.synthetic, c.scenes_per_epoch, c.crop, seed=c.seed, config=scenes,
                                                   timed=timed, h264=c.h264, windows=windows)
            self.val_set: Dataset | None = (SceneDataset(c.synthetic, c.val_scenes, c.crop, augmented=False,
                                                         seed=c.seed + 1, fixed=True, config=scenes, timed=timed,
                                                         h264=c.h264, windows=windows) if c.val_scenes > 0 else None)
        if c.synthetic and c.data:
            from sepconv_cli.data.cache import PatchCache

            cache = PatchCache(c.data)
            if cache.size < c.crop:
                raise InputError(f"patch cache {c.data} holds {cache.size} px patches, smaller than --crop {c.crop}")
            footage = TripletDataset(cache, None, c.crop, seed=c.seed, timed=timed, windows=windows)
            self.train_set = MixedDataset([self.train_set, footage], windows=windows)
            self.data_description += f" mixed with patch cache {c.data} ({len(cache)} triplets)"
        elif c.synthetic:
            pass
        else:
            from sepconv_cli.data.cache import PatchCache, default_cache_dir

            root = Path(c.data) if c.data else default_cache_dir()
            c.data = str(root)
            cache = PatchCache(root)
            if cache.size < c.crop:
                raise InputError(f"patch cache {root} holds {cache.size} px patches, smaller than --crop {c.crop}")
            if not cache.complete:
                self.note(f"{root} is incomplete (an interrupted 'sepconv prepare'); training on its {len(cache)} triplets")
            train_idx, val_idx = split_cache(cache, c.val_fraction, c.seed, c.val_max)
            self.data_description = f"patch cache {root} ({len(cache)} triplets of {cache.size} px)"
            self.train_set = TripletDataset(cache, train_idx, c.crop, seed=c.seed, windows=windows)
            self.val_set = TripletDataset(cache, val_idx, c.crop, augmented=False, windows=windows) if len(val_idx) else None
        if c.val_data:
            from sepconv_cli.data.cache import PatchCache

            held_out = PatchCache(c.val_data)
            crop = held_out.size - held_out.size % self.network.stride
            self.val_set = TripletDataset(held_out, None, crop, augmented=False, timed=timed, windows=windows)
            self.data_description += f"; validated on patch cache {c.val_data} ({len(held_out)} triplets)"
        self.sampler = EpochSampler(self.train_set, self.env.world, self.env.rank, c.seed)
        self.steps_per_epoch = self.sampler.num_samples // self.per_rank
        if self.steps_per_epoch == 0:
            raise InputError(f"only {len(self.train_set)} training triplets: fewer than one batch of {c.batch_size}; "
                             "prepare more or lower --batch-size")
        limits = [c.max_steps] if c.max_steps is not None else []
        if c.epochs is not None:
            limits.append(c.epochs * self.steps_per_epoch)
        self.total_steps = min(limits) if limits else None
        cuda = self.device.type == "cuda"
        self.loader = DataLoader(self.train_set, batch_size=self.per_rank, sampler=self.sampler, drop_last=True,
                                 num_workers=c.workers, pin_memory=cuda, persistent_workers=False)
        self.val_loader = None
        if self.val_set is not None:
            self.val_loader = DataLoader(self.val_set, batch_size=max(1, self.per_rank), shuffle=False,
                                         num_workers=min(c.workers, 2), pin_memory=cuda)

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        try:
            self.network.load_state_dict(checkpoint["model_state"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InputError(f"the checkpoint in {self.run_dir} does not match this {self.config.model} network "
                             f"({str(exc).splitlines()[0][:160]})") from None
        if self.scheduler is not None and checkpoint.get("scheduler"):
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        if checkpoint.get("train_triplets") != len(self.train_set):
            raise InputError(f"the training data changed since {self.run_dir} started ({checkpoint.get('train_triplets')} "
                             f"triplets then, {len(self.train_set)} now): resume with the same data, or start a new run")
        self.step = int(checkpoint["step"])
        self.epoch = int(checkpoint["epoch"])
        self.validated_step = checkpoint.get("validated_step")
        self.epoch_step = int(checkpoint["epoch_step"])
        self.best = dict(checkpoint.get("best") or self.best)
        self.trained_seconds = float(checkpoint.get("trained_seconds", 0.0))
        self.last_checkpoint_step = self.step
        _set_rng_state(checkpoint["rng"])

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.config.model,
            "model_config": model_config(self.network),
            "model_state": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "validated_step": self.validated_step,
            "train_triplets": len(self.train_set),
            "best": self.best,
            "trained_seconds": self.trained_seconds,
            "rng": _rng_state(),
            "config": asdict(self.config),
            "args": list(self.args),
            "sepconv_version": __version__,
        }

    def save_last(self) -> None:
        """Write last.ckpt (rank 0; call through ``_on_main`` in a distributed run)."""
        if self.last_checkpoint_step != self.step:
            _atomic_save(self._checkpoint(), self.writer.checkpoints / "last.ckpt")
            self.last_checkpoint_step = self.step

    def export(self, path: Path) -> None:
        metadata = {
            "trained_by": f"sepconv train {__version__}", "step": self.step, "epoch": self.epoch,
            "losses": self.objective.describe(), "data": self.data_description,
            "best_val_psnr": self.best.get("psnr"), "best_step": self.best.get("step"),
        }
        try:
            save_weights(self.network, path, metadata=metadata)
        except OSError as exc:
            raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from None

    # -- validation --------------------------------------------------------------------

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def validate(self, epoch_end: bool) -> None:
        """Rank 0 validates (the others wait); at an epoch's end also samples and last.ckpt."""
        self.validated_step = self.step
        self._on_main(lambda: self._validate(epoch_end))

    def _validate(self, epoch_end: bool) -> None:
        if self.val_loader is None:
            if epoch_end:
                self.save_last()
                self.writer.flush_tables()
            return
        # Validation runs in fp32 whatever the training precision: exact scores, and cheap.
        scores = evaluate(self.network, self.val_loader, self.device, channels_last=self.channels_last)
        row = {"kind": "val", "step": self.step, "epoch": self.epoch, "time": round(self.trained_seconds, 2),
               "psnr": round(scores["psnr"], 4), "ssim": round(scores["ssim"], 5), "val_l1": round(scores["l1"], 6)}
        self.writer.log(row)
        if self.start_psnr is None:
            self.start_psnr = scores["psnr"]
        improved = self.best.get("psnr") is None or scores["psnr"] > self.best["psnr"]
        if improved:
            self.best = {"psnr": scores["psnr"], "ssim": scores["ssim"], "step": self.step}
        if epoch_end and self.config.samples > 0:
            count = min(self.config.samples, len(self.val_set))
            batch = torch.utils.data.default_collate([self.val_set[i] for i in range(count)])
            self.writer.save_samples(self.epoch, predict_samples(self.network, batch, self.device))
        if epoch_end:
            self.save_last()
        if improved:
            _atomic_save(self._checkpoint(), self.writer.checkpoints / "best.ckpt")
        self.writer.flush_tables()
        self.note(f"step {self.step} (epoch {self.epoch}): validation PSNR {scores['psnr']:.2f} dB, "
                  f"SSIM {scores['ssim']:.4f}" + (" (best)" if improved else ""))

    # -- the loop ----------------------------------------------------------------------

    def _warm_up(self) -> None:
        """Scale this step's learning rate by the warm-up ramp (a function of the step alone, so resumes match)."""
        c = self.config
        if c.warmup_steps <= 0:
            return
        ramp = min(1.0, (self.step + 1) / c.warmup_steps)
        decay = c.lr_decay_factor ** (self.epoch // c.lr_decay_epochs) if c.lr_decay_epochs > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * decay * ramp

    def _train_step(self, batch: torch.Tensor) -> torch.Tensor:
        self._warm_up()
        x = batch_inputs(batch, self.device, self.channels_last)
        frame1, middle, frame2, times = x.frame1, x.middle, x.frame2, x.times
        with self._autocast():
            if self.objective.needs_flipped:
                # One forward pass over both temporal orders (DDP allows one forward per backward).
                both_times = None if times is None else torch.cat([times, 1 - times])
                both_around = None
                if x.neighbours is not None:  # reversed in time, the frame after becomes the one before
                    n = x.neighbours
                    both_around = Neighbours(torch.cat([n.f0m, n.f12]), torch.cat([n.f12, n.f0m]),
                                             valid=torch.cat([n.valid, n.valid]))
                both = run_model(self.model, torch.cat([frame1, frame2]), torch.cat([frame2, frame1]), both_times,
                                 both_around)
                prediction, flipped = both.chunk(2)
            else:
                prediction, flipped = run_model(self.model, frame1, frame2, times, x.neighbours), None
            total, terms = self.objective(prediction, middle, flipped)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return torch.stack([total.detach(), *(terms[n].detach() for n in self.objective.names)]).float()

    def run(self) -> TrainResult:
        c, env = self.config, self.env
        if env.main:
            self.writer = RunWriter(self.run_dir, self.objective.names, self.note)
            if self.resume:
                self.writer.reload_metrics(self.step)
            self.writer.write_json("config.json", {
                "config": asdict(c), "losses": self.objective.describe(), "data": self.data_description,
                "train_triplets": len(self.train_set), "val_triplets": len(self.val_set) if self.val_set else 0,
                "world_size": env.world, "batch_per_process": self.per_rank, "steps_per_epoch": self.steps_per_epoch,
                "device": str(self.device), "channels_last": self.channels_last,
                "sepconv_version": __version__, "torch_version": torch.__version__, "args": list(self.args),
            })
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.network.train()
        self.model: nn.Module = self.network
        if env.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.network, device_ids=ids, gradient_as_bucket_view=True)

        verb = "continuing" if self.resume else "training"
        self.note(f"{verb} {c.model} ({sum(p.numel() for p in self.network.parameters()) / 1e6:.2f} M parameters) "
                  f"on {self.data_description}; loss {self.objective.describe()}; "
                  f"{env.world} process(es) on {self.device}; writing to {self.run_dir}")
        if c.validate_init and not self.resume and self.step == 0:
            self.validate(epoch_end=False)
        reason = self._loop()
        # A final validation unless the user asked to stop now (time budget, Ctrl-C).
        if reason not in ("time-budget", "interrupted") and self.validated_step != self.step:
            self.validate(epoch_end=False)
        digests = env.gather(parameter_digest(self.network))
        weights = self.run_dir / "weights.pt"

        def finish() -> None:
            self.save_last()
            self.export(weights)
            best = self.writer.checkpoints / "best.ckpt"
            if best.exists() and self.best.get("step") != self.step:
                export_checkpoint(best, self.run_dir / "best.pt")
            self.writer.flush_tables()
            in_sync = len(set(digests)) == 1
            self.writer.write_json("summary.json", {
                "reason": reason, "step": self.step, "epoch": self.epoch, "best": self.best,
                "trained_seconds": round(self.trained_seconds, 2), "samples_per_s": round(self._rate, 3),
                "world_size": env.world, "rank_digests": digests, "ranks_in_sync": in_sync,
            })
            if not in_sync:
                self.note("warning: the processes ended with different weights (see summary.json)")
            self.note(f"stopped at step {self.step} (epoch {self.epoch}, {reason}); weights: {weights}")

        self._on_main(finish)
        return TrainResult(self.run_dir, self.step, self.epoch, reason, self.best.get("psnr"), weights, self._rate,
                           self.best.get("step"), self.start_psnr)

    def _on_main(self, action: Callable[[], None]) -> None:
        """Run ``action`` on rank 0; every rank raises if it failed (no rank is left waiting)."""
        error: SepconvError | None = None
        if self.env.main:
            try:
                action()
            except SepconvError as exc:
                error = exc
        if self.env.active:
            failed = self.env.sum(torch.tensor([float(error is not None)], device=self.device))
            if float(failed) > 0 and error is None:
                error = SepconvError("rank 0 failed to write the run's files (see its message)")
        if error is not None:
            raise error

    def _loop(self) -> str:
        c, env = self.config, self.env
        names = self.objective.names
        started = time.perf_counter()
        self._rate = 0.0
        window = torch.zeros(len(names) + 1, dtype=torch.float64)
        window_steps, window_seconds = 0, 0.0
        with _graceful_stop() as interrupt:
            while True:
                reason = self._limit_reached()
                if reason:
                    return reason
                self.sampler.set_epoch(self.epoch)
                self.sampler.start = self.epoch_step * self.per_rank
                self.train_set.set_epoch(self.epoch)
                batches = iter(self.loader)
                while True:
                    tick = time.perf_counter()
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except RuntimeError:
                        if interrupt["stop"]:  # a DataLoader worker killed by the same Ctrl-C
                            return "interrupted"
                        raise
                    values = self._train_step(batch)
                    now = time.perf_counter()
                    last_step_seconds = now - tick
                    # Stop flags ride on the loss's all-reduce: Ctrl-C on any process, and rank 0's
                    # clock for the time budget (stop when another step would overrun it).
                    over = (env.main and c.time_budget is not None
                            and now - started + last_step_seconds >= c.time_budget)
                    flags = torch.tensor([float(interrupt["stop"]), float(over)], device=values.device)
                    packed = env.sum(torch.cat([values, flags]))
                    values = (packed[:-2] / env.world).cpu().double()
                    interrupted, out_of_time = bool(packed[-2] > 0), bool(packed[-1] > 0)
                    if not torch.isfinite(values[0]):
                        raise TrainingError(self._nan_message(float(values[0])))
                    self.step += 1
                    self.epoch_step += 1
                    self.trained_seconds += last_step_seconds
                    window += values
                    window_steps += 1
                    window_seconds += last_step_seconds
                    # Training throughput (data loading included, validation and checkpoints not).
                    rate = window_steps * c.batch_size / max(window_seconds, 1e-9)
                    self._rate = rate
                    self.progress(TrainProgress(self.step, self.total_steps, self.epoch, float(values[0]), rate,
                                                self.start_psnr, self.best.get("psnr")))
                    if env.main and (self.step % c.log_every == 0 or self.epoch_step == self.steps_per_epoch):
                        mean = (window / window_steps).tolist()
                        self.writer.log({
                            "kind": "train", "step": self.step, "epoch": self.epoch,
                            "time": round(self.trained_seconds, 2), "lr": self.optimizer.param_groups[0]["lr"],
                            "loss": mean[0], **dict(zip(names, mean[1:])), "samples_per_s": round(rate, 3),
                        })
                        window.zero_()
                        window_steps, window_seconds = 0, 0.0
                    if self.epoch_step == self.steps_per_epoch:
                        self.epoch += 1
                        self.epoch_step = 0
                        if self.scheduler is not None:
                            self.scheduler.step()
                        self.validate(epoch_end=True)
                    elif c.val_every and self.step % c.val_every == 0:
                        self.validate(epoch_end=False)
                    elif c.checkpoint_every and self.step % c.checkpoint_every == 0:
                        self._on_main(self.save_last)
                    if interrupted:
                        return "interrupted"
                    if out_of_time:
                        return "time-budget"
                    reason = self._limit_reached()
                    if reason:
                        return reason
                if self.epoch_step:  # the loader ended early (cannot happen with drop_last)
                    raise TrainingError(f"the data loader stopped after {self.epoch_step} of {self.steps_per_epoch} steps")

    def _limit_reached(self) -> str | None:
        c = self.config
        if c.epochs is not None and self.epoch >= c.epochs:
            return "epochs"
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max-steps"
        return None

    def _nan_message(self, value: float) -> str:
        where = f"loss became {value} at step {self.step + 1} (epoch {self.epoch})"
        if self.last_checkpoint_step is None:
            kept = "no checkpoint had been written yet"
        else:
            kept = f"the last good checkpoint {self.run_dir / 'checkpoints' / 'last.ckpt'} (step {self.last_checkpoint_step}) is kept"
        return f"{where}; training stopped, {kept}. Try a lower --lr or --precision fp32, then --resume"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def train(config: TrainConfig, run_dir: str | Path | None = None, *, resume: bool = False,
          args: list[str] | None = None, note: Note | None = None, progress: ProgressFn | None = None) -> TrainResult:
    """Train (or, with ``resume=True``, continue) a run; see the module docstring.

    ``run_dir`` defaults to ``runs/<model>-<timestamp>``. ``note`` receives one-line
    messages, ``progress`` a ``TrainProgress`` after every step (both on rank 0 only).
    Raises ``SepconvError`` subclasses on bad input, a NaN loss or a failed write.
    """
    config = dataclasses.replace(config, model_config=dict(config.model_config), losses=list(config.losses))
    env = setup_distributed(config.device)
    try:
        chosen = Path(run_dir) if run_dir is not None else default_run_dir(config.model)
        chosen = Path(env.broadcast(str(chosen)))
        trainer = Trainer(config, chosen, env, resume=resume, args=list(args if args is not None else sys.argv[1:]),
                          note=note or (lambda text: None), progress=progress or (lambda p: None))
        failure: SepconvError | None = None
        try:
            trainer.setup()
        except SepconvError as exc:
            failure = exc
        if env.active:  # every process stops when one cannot start, instead of waiting forever
            failed = env.sum(torch.tensor([float(failure is not None)], device=env.device))
            if float(failed) > 0 and failure is None:
                failure = SepconvError("another training process failed to start (see its message)")
        if failure is not None:
            raise failure
        result = trainer.run()
        # Rank 0 still writes the final files while the others are done: tearing the gloo
        # group down under it made rank 0 abort at exit now and then ("terminate called").
        env.barrier()
        return result
    finally:
        env.close()
