#!/usr/bin/env python3
"""Train SepConv and DSepConv for a fixed time each on a lent GPU and bring the weights back.

``benchmarks/gpu_check.sh`` runs this after its kernel checks (one call does both); it also
runs alone, from the repository root:

    OUT=/tmp/out python benchmarks/gpu_train.py                 # train, write to $OUT
    python benchmarks/gpu_train.py --check                      # only check the settings
    python benchmarks/gpu_train.py --pack-photos SRC DST        # photographs small enough to carry
    python benchmarks/gpu_train.py --pack-cache SRC DST --mib 8 [--size 128]   # a patch-cache subset

Each model is trained by the project's own ``sepconv train`` (procedural scenes rendered on
the fly by DataLoader workers from the photographs in GPU_TRAIN_PHOTOS, mixed half and half
with a carried patch cache when GPU_TRAIN_CACHE is set), for GPU_TRAIN_SECONDS or the share
of the time left before the deadline, whichever is less. ``--time-budget`` skips the run's
final validation, so afterwards the final weights are scored here on the same held-out set
(GPU_TRAIN_VAL_CACHE, a patch cache of other footage, or else GPU_TRAIN_VAL_SCENES fixed
scenes from their own seed), the better of them and the run's best checkpoint is written as
a weights file, and that file, as stored, is scored again: the PSNR in the JSON is the one of
the file that comes back.

$OUT receives at most 8 files of at most 16 MiB, 64 MiB together (the device tool's limits):
``gpu_train.json`` (per model: held-out PSNR/SSIM of the returned file, the run's best PSNR,
steps, samples/s, the file's parts and SHA-256), ``train_logs.tar.gz`` (each run's log,
config, metrics, curves and last samples) and one weights file per model, NAME.fp16.pt
(every float tensor in half precision: ``load_weights`` reads it, the network stays fp32)
or, when fp16 would not fit, NAME.int8.pt (the registry's per-channel int8 format, what
``sepconv train`` itself exports). Files over 15 MiB are split into NAME.FMT.pt.part0,
.part1, ...: ``cat NAME.FMT.pt.part* > NAME.FMT.pt`` joins them (the JSON has the hash).
Full-size fp16 weights of both models are ~87 MB, over the 64 MiB, so ``auto`` gives int8
for them; fp16 comes back for one model (GPU_TRAIN_MODELS=sepconv) or small configs.

Without a CUDA GPU nothing is trained (recorded, exit 0) unless GPU_TRAIN_DRY_RUN=1, which
trains on the CPU in fp32: with tiny GPU_TRAIN_*_CONFIG models that is the end-to-end test
of this script (tests/test_gpu_script.py). Exit status: 0 when every model came back, 1
when one failed, 2 for bad settings (one line on stderr, before anything is trained).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The device tool's limits on what comes back from $OUT.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
MAX_TOTAL_BYTES = 64 * 2**20
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
# Room kept for the JSON and log archives (this script's and gpu_check.sh's) in the 64 MiB.
RESERVED_BYTES_PER_FILE = 2**20
MODELS = ("sepconv", "dsepconv")
FORMATS = ("auto", "fp16", "int8")

# (variable, default, meaning); the defaults are sized for one H200 with 16 cores, after
# gpu_check.sh's kernel checks, inside one 10-minute command.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("GPU_TRAIN_MODELS", "sepconv dsepconv", "models to train, in order"),
    ("GPU_TRAIN_SECONDS", "150", "most training seconds per model (--time-budget)"),
    ("GPU_TRAIN_TOTAL_S", "540", "standalone: everything ends this many seconds after the start"),
    ("GPU_TRAIN_DEADLINE", "", "the end as Unix seconds (gpu_check.sh sets it; overrides GPU_TRAIN_TOTAL_S)"),
    ("GPU_TRAIN_OVERHEAD_S", "", "seconds per model beside training: start-up, export, scoring [45 on CUDA, 15 on CPU]"),
    ("GPU_TRAIN_PHOTOS", ".carry/photos", "folder of photographs for the procedural scenes"),
    ("GPU_TRAIN_CACHE", "", "patch cache of real footage, mixed half and half with the scenes"),
    ("GPU_TRAIN_VAL_CACHE", "", "held-out patch cache to validate on (else fixed procedural scenes)"),
    ("GPU_TRAIN_WEIGHTS", "auto", "auto (fp16 when it fits the limits, else int8), fp16 or int8"),
    ("GPU_TRAIN_DRY_RUN", "0", "1: train on the CPU in fp32 (no GPU needed)"),
    ("GPU_TRAIN_PRECISION", "", "sepconv train --precision [bf16 on CUDA, fp32 on the CPU]"),
    ("GPU_TRAIN_BATCH", "16", "--batch-size"),
    ("GPU_TRAIN_CROP", "128", "--crop"),
    ("GPU_TRAIN_SCENE_SIZE", "150", "--scene-size"),
    ("GPU_TRAIN_SCENES_PER_EPOCH", "8192", "--scenes-per-epoch (each epoch's end validates)"),
    ("GPU_TRAIN_VAL_SCENES", "64", "--val-scenes"),
    ("GPU_TRAIN_WORKERS", "", "--workers [CPU cores - 1 on CUDA, at most 15; 0 on the CPU]"),
    ("GPU_TRAIN_LR", "0.001", "--lr"),
    ("GPU_TRAIN_SEED", "0", "--seed"),
    ("GPU_TRAIN_SEPCONV_CONFIG", "", "--model-config JSON for sepconv (e.g. a tiny one for the dry run)"),
    ("GPU_TRAIN_DSEPCONV_CONFIG", "", "--model-config JSON for dsepconv"),
    ("GPU_TRAIN_ARGS", "", "more 'sepconv train' arguments, split on spaces"),
    ("GPU_TRAIN_PART_MIB", "15", "weights files above this many MiB are split into parts"),
)


class SettingsError(Exception):
    """Bad settings: reported as one line, exit status 2."""


LOG: list[str] = []  # this run's messages, also kept for the log archive


def log(text: str) -> None:
    LOG.append(f"{time.strftime('%H:%M:%S')} {text}")
    print(f"gpu_train: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    out: Path
    models: list[str]
    seconds: float
    deadline: float
    overhead: float
    photos: Path
    cache: Path | None
    val_cache: Path | None
    weights: str
    device: str | None  # None: no CUDA and no dry run, so nothing to train
    precision: str
    batch: int
    crop: int
    scene_size: int
    scenes_per_epoch: int
    val_scenes: int
    workers: int
    lr: float
    seed: int
    model_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    part_bytes: int = 15 * 2**20


def _number(env: dict[str, str], name: str, kind: type, minimum: float) -> Any:  # noqa: ANN401 - int or float
    raw = env[name]
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not (value >= minimum and math.isfinite(value)):
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _folder(env: dict[str, str], name: str) -> Path | None:
    """The folder ``env[name]`` names (relative to the repository root), None when empty."""
    raw = env[name].strip()
    if not raw:
        return None
    path = Path(raw) if Path(raw).is_absolute() else ROOT / raw
    if not path.is_dir():
        hint = " (make one with: python benchmarks/gpu_train.py --pack-photos SRC DST)" if name == "GPU_TRAIN_PHOTOS" else ""
        raise SettingsError(f"{name}={raw}: no such folder{hint}")
    return path


def read_settings(out: Path, environ: dict[str, str] | None = None, cuda: bool | None = None) -> Settings:
    """The settings from ``environ`` (the GPU_TRAIN_* variables), checked; SettingsError if bad."""
    source = os.environ if environ is None else environ
    env = {name: source.get(name, default) for name, default, _ in VARIABLES}
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    dry_run = env["GPU_TRAIN_DRY_RUN"].strip() not in ("", "0")
    device = "cpu" if dry_run else ("cuda" if cuda else None)

    models = env["GPU_TRAIN_MODELS"].replace(",", " ").split()
    unknown = [m for m in models if m not in MODELS]
    if not models or unknown or len(set(models)) != len(models):
        raise SettingsError(f"GPU_TRAIN_MODELS={env['GPU_TRAIN_MODELS']!r}: give each of {', '.join(MODELS)} at most once")
    weights = env["GPU_TRAIN_WEIGHTS"].strip().lower()
    if weights not in FORMATS:
        raise SettingsError(f"GPU_TRAIN_WEIGHTS={env['GPU_TRAIN_WEIGHTS']!r}: one of {', '.join(FORMATS)}")
    start = time.time()
    if env["GPU_TRAIN_DEADLINE"].strip():
        deadline = _number(env, "GPU_TRAIN_DEADLINE", float, 0)
    else:
        deadline = start + _number(env, "GPU_TRAIN_TOTAL_S", float, 1)
    overhead = (_number(env, "GPU_TRAIN_OVERHEAD_S", float, 0) if env["GPU_TRAIN_OVERHEAD_S"].strip()
                else 45.0 if device == "cuda" else 15.0)
    precision = env["GPU_TRAIN_PRECISION"].strip() or ("bf16" if device == "cuda" else "fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise SettingsError(f"GPU_TRAIN_PRECISION={precision!r}: fp32, bf16 or fp16")
    if precision == "fp16" and device != "cuda":
        raise SettingsError("GPU_TRAIN_PRECISION=fp16 needs CUDA (fp32 or bf16 on the CPU)")
    cores = os.cpu_count() or 1
    workers = (_number(env, "GPU_TRAIN_WORKERS", int, 0) if env["GPU_TRAIN_WORKERS"].strip()
               else min(15, cores - 1) if device == "cuda" else 0)
    settings = Settings(
        out=out, models=models, seconds=_number(env, "GPU_TRAIN_SECONDS", float, 1), deadline=deadline,
        overhead=overhead, photos=Path(), cache=_folder(env, "GPU_TRAIN_CACHE"),
        val_cache=_folder(env, "GPU_TRAIN_VAL_CACHE"), weights=weights, device=device, precision=precision,
        batch=_number(env, "GPU_TRAIN_BATCH", int, 1), crop=_number(env, "GPU_TRAIN_CROP", int, 32),
        scene_size=_number(env, "GPU_TRAIN_SCENE_SIZE", int, 32),
        scenes_per_epoch=_number(env, "GPU_TRAIN_SCENES_PER_EPOCH", int, 1),
        val_scenes=_number(env, "GPU_TRAIN_VAL_SCENES", int, 0), workers=workers,
        lr=_number(env, "GPU_TRAIN_LR", float, 1e-12), seed=_number(env, "GPU_TRAIN_SEED", int, -2**31),
        extra=env["GPU_TRAIN_ARGS"].split(), part_bytes=int(_number(env, "GPU_TRAIN_PART_MIB", float, 0.01) * 2**20),
    )
    if settings.part_bytes > MAX_FILE_BYTES:
        raise SettingsError(f"GPU_TRAIN_PART_MIB={env['GPU_TRAIN_PART_MIB']} is over the 16 MiB a file may have")
    for model in models:
        name = f"GPU_TRAIN_{model.upper()}_CONFIG"
        raw = env[name].strip()
        try:
            config = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise SettingsError(f"{name} is not JSON ({exc})") from None
        if not isinstance(config, dict):
            raise SettingsError(f"{name} must be a JSON object")
        settings.model_configs[model] = config
    if settings.crop % 32:
        raise SettingsError(f"GPU_TRAIN_CROP={settings.crop} must be divisible by 32 (the models' stride)")
    if settings.crop > settings.scene_size:
        raise SettingsError(f"GPU_TRAIN_CROP={settings.crop} is larger than GPU_TRAIN_SCENE_SIZE={settings.scene_size}")
    if settings.val_cache is None and settings.val_scenes < 1:
        raise SettingsError("GPU_TRAIN_VAL_SCENES=0 and no GPU_TRAIN_VAL_CACHE: nothing to validate on")
    if settings.device is not None:
        photos = _folder(env, "GPU_TRAIN_PHOTOS")
        if photos is None:
            raise SettingsError("GPU_TRAIN_PHOTOS is empty: the procedural scenes need a folder of photographs")
        settings.photos = photos
    return settings


def check_inputs(settings: Settings) -> dict[str, Any]:
    """Open the photographs and caches and build each model on the meta device: the failures
    'sepconv train' would hit, found in seconds instead of after the kernel checks."""
    import torch

    from sepconv_cli.data.cache import PatchCache
    from sepconv_cli.data.synthetic import PhotoBank
    from sepconv_cli.errors import SepconvError
    from sepconv_cli.models.registry import build_model

    facts: dict[str, Any] = {}
    try:
        bank = PhotoBank.from_folder(settings.photos, side=32)
    except SepconvError as exc:
        raise SettingsError(f"GPU_TRAIN_PHOTOS: {exc}") from None
    facts["photos"] = {"folder": str(settings.photos), "textures": len(bank), "skipped": bank.skipped}
    for name, path, least in (("GPU_TRAIN_CACHE", settings.cache, settings.crop), ("GPU_TRAIN_VAL_CACHE", settings.val_cache, 32)):
        if path is None:
            continue
        try:
            cache = PatchCache(path)
        except SepconvError as exc:
            raise SettingsError(f"{name}: {exc}") from None
        if cache.size < least:
            raise SettingsError(f"{name}: {path} holds {cache.size} px patches, under the {least} px it needs")
        facts[name.removeprefix("GPU_TRAIN_").lower()] = {"folder": str(path), "triplets": len(cache), "size": cache.size}
    for model in settings.models:
        try:
            with torch.device("meta"):
                build_model(model, settings.model_configs[model])
        except (SepconvError, TypeError, ValueError) as exc:
            raise SettingsError(f"GPU_TRAIN_{model.upper()}_CONFIG: {exc}") from None
    return facts


# --------------------------------------------------------------------------------------
# Weights files: formats, sizes, parts


def predicted_bytes(model: str, config: dict[str, Any], fmt: str) -> int:
    """The size of ``model``'s weights file in ``fmt``, from its tensors' shapes (a margin per
    tensor covers the zip records and the pickle), so the plan is known before training."""
    import torch

    from sepconv_cli.models.registry import QUANTISE_MIN_ELEMENTS, build_model

    with torch.device("meta"):
        state = build_model(model, config).state_dict()
    total = 64 * 1024
    for value in state.values():
        if not value.is_floating_point():
            total += value.numel() * value.element_size() + 1024
        elif fmt == "fp16":
            total += value.numel() * 2 + 1024
        elif value.dim() >= 2 and value.numel() >= QUANTISE_MIN_ELEMENTS:
            total += value.numel() + 4 * value.shape[0] + 2048
        else:
            total += value.numel() * 4 + 1024
    return total


def plan_weights(settings: Settings, reserve_files: int = 0) -> dict[str, Any]:
    """The weights format and parts for ``settings``, within the limits of what comes back
    (counting what already lies in ``settings.out`` and ``reserve_files`` more to come)."""
    present = [p for p in settings.out.iterdir() if p.is_file()] if settings.out.is_dir() else []
    files_left = MAX_FILES - len(present) - reserve_files - 2  # our JSON and log archive
    bytes_left = MAX_TOTAL_BYTES - sum(p.stat().st_size for p in present) - (reserve_files + 2) * RESERVED_BYTES_PER_FILE
    options = ("fp16", "int8") if settings.weights == "auto" else (settings.weights,)
    tried = []
    for fmt in options:
        sizes = {m: predicted_bytes(m, settings.model_configs[m], fmt) for m in settings.models}
        parts = sum(math.ceil(size / settings.part_bytes) for size in sizes.values())
        total = sum(sizes.values())
        if parts <= files_left and total <= bytes_left:
            return {"format": fmt, "predicted_bytes": sizes, "files": parts}
        tried.append(f"{fmt}: {total / 2**20:.1f} MiB in {parts} files")
    raise SettingsError(
        f"the weights would not come back from $OUT ({'; '.join(tried)}; room for {max(files_left, 0)} files and "
        f"{max(bytes_left, 0) / 2**20:.1f} MiB): set GPU_TRAIN_WEIGHTS=int8, fewer GPU_TRAIN_MODELS or smaller configs")


def write_fp16_weights(state: dict[str, Any], model: str, config: dict[str, Any], path: Path,
                       metadata: dict[str, Any]) -> None:
    """A weights file in the registry's format whose float tensors are half precision.

    ``load_weights`` reads it unchanged: ``load_state_dict`` copies each fp16 tensor into the
    network's fp32 parameter, so only the file is half precision (half the size of fp32).
    """
    import torch

    from sepconv_cli.models.registry import FORMAT, FORMAT_VERSION

    tensors = {key: (value.detach().cpu().half() if value.is_floating_point() else value.detach().cpu()).contiguous()
               for key, value in state.items()}
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "model": model, "config": config,
               "tensors": tensors, "metadata": {**metadata, "stored_as": "fp16"}}
    temporary = path.with_name(f".{path.name}.partial")
    torch.save(payload, temporary)
    temporary.replace(path)


def split_file(path: Path, part_bytes: int) -> list[Path]:
    """``path`` itself when it fits ``part_bytes``, else PATH.part0, PATH.part1, ... (``path`` removed)."""
    size = path.stat().st_size
    if size <= part_bytes:
        return [path]
    parts = []
    with open(path, "rb") as source:
        for k in range(math.ceil(size / part_bytes)):
            part = path.with_name(f"{path.name}.part{k}")
            part.write_bytes(source.read(part_bytes))
            parts.append(part)
    path.unlink()
    return parts


def join_parts(parts: list[Path], path: Path) -> Path:
    """The inverse of ``split_file``: ``cat PATH.part0 PATH.part1 ... > PATH`` (parts in number order)."""
    ordered = sorted(parts, key=lambda p: int(p.name.rsplit(".part", 1)[1]) if ".part" in p.name else -1)
    with open(path, "wb") as target:
        for part in ordered:
            target.write(part.read_bytes())
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Packing the carried data


def pack_photos(source: Path, target: Path, side: int = 384, quality: int = 90) -> tuple[int, int]:
    """Every image under ``source`` as a JPEG whose short side is ``side`` (the photo bank
    resizes to 384 px squares anyway): a folder of ~80 KB files that fits the carry.
    Returns (files written, bytes)."""
    import cv2

    from sepconv_cli.images import IMAGE_SUFFIXES, read_image

    if not source.is_dir():
        raise SettingsError(f"--pack-photos: {source} is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    count, total = 0, 0
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        rgb = read_image(path)
        if rgb is None or min(rgb.shape[:2]) < 16:
            log(f"skipped {path} (unreadable or tiny)")
            continue
        scale = side / min(rgb.shape[:2])
        if scale < 1:
            rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise SettingsError(f"--pack-photos: cannot encode {path}")
        name = path.relative_to(source).with_suffix("").as_posix().replace("/", "_") + ".jpg"
        (target / name).write_bytes(data.tobytes())
        count, total = count + 1, total + len(data)
    if count == 0:
        raise SettingsError(f"--pack-photos: no readable images under {source}")
    return count, total


def pack_cache(source: Path, target: Path, mib: float, size: int | None = None, unit: int = 16) -> tuple[int, int]:
    """A patch cache of the triplets of ``source`` spread evenly over it that fit in ``mib``
    MiB (each triplet is 9·S² bytes), centre-cropped to ``size`` px when given. Returns
    (triplets, bytes)."""
    import numpy as np

    from sepconv_cli.data.cache import CacheIndex, PatchCache, UnitRecord, write_index, write_shard
    from sepconv_cli.errors import SepconvError

    try:
        cache = PatchCache(source)
    except SepconvError as exc:
        raise SettingsError(f"--pack-cache: {exc}") from None
    side = size or cache.size
    if side > cache.size:
        raise SettingsError(f"--pack-cache --size {side} is larger than the cache's {cache.size} px patches")
    if (target / "index.json").exists():
        raise SettingsError(f"--pack-cache: {target} already holds a patch cache")
    want = min(len(cache), int(mib * 2**20 // (9 * side * side)))
    if want < 1:
        raise SettingsError(f"--pack-cache --mib {mib}: not even one {side} px triplet fits")
    chosen = np.unique(np.linspace(0, len(cache) - 1, want).round().astype(int))
    offset = (cache.size - side) // 2
    old = cache.index
    index = CacheIndex(source=f"{old.source} (subset of {source})", kind=old.kind,
                       parameters={**old.parameters, "size": side, "subset_of": str(source), "subset": len(chosen)},
                       seed=old.seed, size=side)
    for number, first in enumerate(range(0, len(chosen), unit)):
        block = chosen[first : first + unit]
        triplets = np.stack([cache[int(i)][:, :, offset : offset + side, offset : offset + side] for i in block])
        shard = write_shard(target, number, triplets)
        index.units.append(UnitRecord(number=number, key=f"subset:{int(block[0])}-{int(block[-1])}", shard=shard,
                                      patches=len(block)))
    index.complete = True
    write_index(target, index)
    return len(chosen), sum(p.stat().st_size for p in target.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------
# Training and scoring one model


def train_command(settings: Settings, model: str, run_dir: Path, seconds: float) -> list[str]:
    command = [sys.executable, "-m", "sepconv_cli", "train", "--model", model, "--out", str(run_dir),
               "--synthetic", str(settings.photos), "--time-budget", f"{seconds:.1f}", "--device", str(settings.device),
               "--precision", settings.precision, "--batch-size", str(settings.batch), "--crop", str(settings.crop),
               "--scene-size", str(settings.scene_size), "--scenes-per-epoch", str(settings.scenes_per_epoch),
               "--val-scenes", str(settings.val_scenes), "--workers", str(settings.workers), "--lr", str(settings.lr),
               "--seed", str(settings.seed), "--samples", "2"]
    if settings.model_configs[model]:
        command += ["--model-config", json.dumps(settings.model_configs[model])]
    if settings.cache is not None:
        command += ["--data", str(settings.cache)]
    if settings.val_cache is not None:
        command += ["--val-data", str(settings.val_cache)]
    return command + settings.extra


def run_training(command: list[str], log_path: Path, limit: float) -> dict[str, Any]:
    """Run ``sepconv train``; past ``limit`` seconds SIGTERM (it then stops after the step and
    writes its files, as on Ctrl-C), and 30 s later kill."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    started = time.time()
    with open(log_path, "w") as output:
        output.write("$ " + " ".join(command) + "\n")
        output.flush()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        timed_out = False
        try:
            rc = process.wait(timeout=max(limit, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            process.send_signal(signal.SIGTERM)
            try:
                rc = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                rc = process.wait()
    return {"rc": rc, "timed_out": timed_out, "seconds": round(time.time() - started, 1)}


def score_and_export(settings: Settings, model: str, run_dir: Path, fmt: str, work: Path) -> dict[str, Any]:
    """Score the run's final weights on its held-out set, write the better of them and the best
    checkpoint as a ``fmt`` weights file, score that file, and split it into parts in $OUT."""
    import torch

    from sepconv_cli.models.registry import load_weights, model_config, save_weights
    from sepconv_cli.training import Trainer, evaluate, load_run_config, read_checkpoint, setup_distributed

    config = load_run_config(run_dir)
    config.device, config.workers = str(settings.device), settings.workers
    env = setup_distributed(config.device)
    trainer = None
    try:
        # A resumed trainer's set-up rebuilds exactly the run's network (from last.ckpt) and
        # its validation loader, so the scores below are on the set the run validated on.
        trainer = Trainer(config, run_dir, env, resume=True, args=[], note=lambda text: None, progress=lambda p: None)
        trainer.setup()
        if trainer.val_loader is None:
            raise RuntimeError(f"{run_dir} has no validation set")
        last = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        final = evaluate(trainer.network, trainer.val_loader, env.device, channels_last=trainer.channels_last)
        chosen = {"state": "last.ckpt", "step": int(last["step"]), "psnr": final["psnr"]}
        best_path = run_dir / "checkpoints" / "best.ckpt"
        if best_path.exists():
            best = read_checkpoint(best_path)
            best_psnr = (best.get("best") or {}).get("psnr")
            if best_psnr is not None and best_psnr > final["psnr"]:
                chosen = {"state": "best.ckpt", "step": int(best["step"]), "psnr": best_psnr}
                trainer.network.load_state_dict(best["model_state"])
        # Training's channels-last strides are no part of the weights; files store plain NCHW.
        network = trainer.network.float().cpu().to(memory_format=torch.contiguous_format)
        name = f"{model}.{fmt}.pt"
        path = work / name
        held_out = (f"patch cache {settings.val_cache}" if settings.val_cache is not None
                    else f"fixed procedural scenes of seed {config.seed + 1}")
        metadata = {"trained_by": "benchmarks/gpu_train.py (sepconv train)", "step": chosen["step"],
                    "val_psnr_fp32": chosen["psnr"], "val": f"{len(trainer.val_set)} triplets: {held_out}"}
        if fmt == "fp16":
            write_fp16_weights(network.state_dict(), model, model_config(network), path, metadata)
        else:
            save_weights(network, path, quantised=True, metadata=metadata)
        stored = load_weights(path, model=model).to(env.device)
        if trainer.channels_last:
            stored = stored.to(memory_format=torch.channels_last)
        scores = evaluate(stored, trainer.val_loader, env.device, channels_last=trainer.channels_last)
        size, digest = path.stat().st_size, sha256(path)
        parts = []
        for part in split_file(path, settings.part_bytes):
            shutil.move(str(part), settings.out / part.name)
            parts.append(part.name)
        return {"psnr": scores["psnr"], "ssim": scores["ssim"], "val_l1": scores["l1"], "val": metadata["val"],
                "weights": name, "files": parts, "bytes": size, "sha256": digest, "format": fmt,
                "chosen": chosen, "final_psnr_fp32": final["psnr"], "config": model_config(network)}
    finally:
        env.close()
        del trainer  # frees its GPU memory before the next model trains
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def pack_logs(work: Path, archive: Path) -> None:
    """Logs and each run's small files into ``archive``; checkpoints, weights and all but the
    last two sample images are deleted first (``work`` is a scratch folder), to stay small."""
    for path in list(work.rglob("*")):
        if path.is_file() and (path.suffix in (".pt", ".ckpt", ".partial") or "checkpoints" in path.parts):
            path.unlink()
    for samples in work.glob("*/samples"):
        for old in sorted(samples.glob("*.png"))[:-2]:
            old.unlink()
    for folder in work.glob("*/checkpoints"):
        shutil.rmtree(folder, ignore_errors=True)
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(work.iterdir()):
            tar.add(item, arcname=item.name)


# --------------------------------------------------------------------------------------
# The whole run


def train_all(settings: Settings, plan: dict[str, Any], facts: dict[str, Any]) -> int:
    import torch

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="gpu_train_"))
    report: dict[str, Any] = {
        "device": settings.device, "gpu": torch.cuda.get_device_name() if settings.device == "cuda" else None,
        "dry_run": settings.device == "cpu", "torch": torch.__version__, "weights_format": plan["format"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "inputs": facts, "models": {},
        "join": "cat NAME.FMT.pt.part0 NAME.FMT.pt.part1 ... > NAME.FMT.pt where a file came back in parts",
    }
    failed = False
    for k, model in enumerate(settings.models):
        models_left = len(settings.models) - k
        share = (settings.deadline - time.time() - settings.overhead * models_left) / models_left
        seconds = min(settings.seconds, share)
        entry: dict[str, Any] = {"time_budget_s": round(seconds, 1)}
        report["models"][model] = entry
        if seconds < max(1.0, settings.seconds / 4):
            entry["skipped"] = f"out of time ({max(seconds, 0):.0f} s left for it)"
            log(f"{model}: skipped, {entry['skipped']}")
            failed = True
            continue
        run_dir = work / model
        log(f"{model}: training for {seconds:.0f} s on {settings.device} ({settings.precision})")
        entry.update(run_training(train_command(settings, model, run_dir, seconds), work / f"{model}.log",
                                  seconds + settings.overhead))
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            entry.update({"steps": summary.get("step"), "reason": summary.get("reason"),
                          "samples_per_s": summary.get("samples_per_s"),
                          "trained_seconds": summary.get("trained_seconds"),
                          "psnr_training_best": (summary.get("best") or {}).get("psnr"),
                          "best_step": (summary.get("best") or {}).get("step")})
        if not (run_dir / "checkpoints" / "last.ckpt").exists():
            entry["error"] = f"sepconv train exited {entry['rc']} without a checkpoint (see {model}.log)"
            log(f"{model}: {entry['error']}")
            failed = True
            continue
        try:
            entry.update(score_and_export(settings, model, run_dir, plan["format"], work))
        except Exception as exc:  # noqa: BLE001 - recorded; the next model still trains
            entry["error"] = f"scoring/export failed: {type(exc).__name__}: {exc}"
            log(f"{model}: {entry['error']}")
            failed = True
            continue
        failed = failed or entry["rc"] != 0
        log(f"{model}: {entry.get('steps')} steps, held-out PSNR {entry['psnr']:.2f} dB ({entry['format']}), "
            f"files {', '.join(entry['files'])}")
    report["seconds"] = round(time.time() - started, 1)
    (settings.out / "gpu_train.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (work / "gpu_train.log").write_text("\n".join(LOG) + "\n")
    pack_logs(work, settings.out / "train_logs.tar.gz")
    shutil.rmtree(work, ignore_errors=True)
    problems = check_out(settings.out)
    for problem in problems:
        log(f"warning: {problem}")
    return 1 if failed or problems else 0


def check_out(out: Path) -> list[str]:
    """What in ``out`` the device tool would not bring back."""
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = [f"{len(files)} files in {out}, over {MAX_FILES}"] if len(files) > MAX_FILES else []
    total = sum(p.stat().st_size for p in files)
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total / 2**20:.1f} MiB in {out}, over 64 MiB")
    for path in files:
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{path.name} is over 16 MiB")
        if set(path.name) - NAME_CHARS:
            problems.append(f"{path.name} has characters the device tool refuses")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train sepconv and dsepconv for a fixed time each (settings: the GPU_TRAIN_* variables below).",
        epilog="\n".join(f"  {name:28} {meaning} [{default or '-'}]" for name, default, meaning in VARIABLES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where the results go [$OUT]")
    parser.add_argument("--check", action="store_true", help="only check the settings and inputs, train nothing")
    parser.add_argument("--reserve-files", type=int, default=0,
                        help="files others will still write to the output folder (gpu_check.sh: 2)")
    parser.add_argument("--pack-photos", nargs=2, type=Path, metavar=("SRC", "DST"),
                        help="write SRC's images as small JPEGs into DST (to carry as GPU_TRAIN_PHOTOS)")
    parser.add_argument("--pack-cache", nargs=2, type=Path, metavar=("SRC", "DST"),
                        help="write a subset of patch cache SRC that fits --mib into DST (GPU_TRAIN_CACHE)")
    parser.add_argument("--mib", type=float, default=8.0, help="with --pack-cache: size of the subset [8]")
    parser.add_argument("--size", type=int, default=None, help="with --pack-cache: centre-crop patches to this side")
    args = parser.parse_args(argv)
    try:
        if args.pack_photos:
            count, size = pack_photos(*args.pack_photos)
            log(f"wrote {count} photographs, {size / 2**20:.1f} MiB, to {args.pack_photos[1]}")
            return 0
        if args.pack_cache:
            count, size = pack_cache(*args.pack_cache, mib=args.mib, size=args.size)
            log(f"wrote {count} triplets, {size / 2**20:.1f} MiB, to {args.pack_cache[1]}")
            return 0
        out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
        if out is None:
            raise SettingsError("no output folder: set OUT or pass --out")
        settings = read_settings(out)
        if settings.device is None:
            log("no CUDA GPU visible to PyTorch: nothing trained (GPU_TRAIN_DRY_RUN=1 trains on the CPU)")
            if not args.check:
                out.mkdir(parents=True, exist_ok=True)
                (out / "gpu_train.json").write_text(json.dumps({"skipped": "no CUDA GPU", "models": {}}) + "\n")
            return 0
        facts = check_inputs(settings)
        plan = plan_weights(settings, args.reserve_files)
        if args.check:
            log(f"settings fine: {', '.join(settings.models)} on {settings.device}, weights {plan['format']} "
                f"in {plan['files']} file(s), {facts['photos']['textures']} photo textures")
            return 0
        out.mkdir(parents=True, exist_ok=True)
        return train_all(settings, plan, facts)
    except SettingsError as exc:
        print(f"gpu_train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
