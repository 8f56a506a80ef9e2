"""A run's files on disk: checkpoints (read, checked, exported as weights), the writes that
keep the previous file when they fail, and the RNG states a checkpoint carries so that a
resume draws what the uninterrupted run would have drawn."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sepconv_cli import __version__
from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.models.registry import build_model, save_weights
from sepconv_cli.serialization import load_code_free
from sepconv_cli.training.config import TrainConfig

CHECKPOINT_FORMAT = "sepconv-checkpoint"
CHECKPOINT_VERSION = 1


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


def exported_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint exports: its weight average when the run kept one (that is
    what it validated), else the live weights."""
    average = checkpoint.get("ema")
    return average["state"] if average else checkpoint["model_state"]


def export_checkpoint(checkpoint: str | Path, path: str | Path) -> Path:
    """Write the network of a training checkpoint as a weights file (no optimizer state)."""
    data = read_checkpoint(checkpoint)
    network = build_model(data["model"], data.get("model_config"))
    network.load_state_dict(exported_state(data))
    metadata = {
        "trained_by": f"sepconv train {data.get('sepconv_version', __version__)}", "step": data.get("step"),
        "epoch": data.get("epoch"), "best_val_psnr": (data.get("best") or {}).get("psnr"),
        "best_step": (data.get("best") or {}).get("step"),
    }
    if data.get("ema"):
        metadata["ema"] = {"decay": data["ema"]["decay"], "updates": data["ema"]["updates"]}
    save_weights(network, path, metadata=metadata)
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
