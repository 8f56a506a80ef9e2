"""benchmarks/gpu_check.sh + gpu_train.py: the one-call GPU script, dry-run on the CPU.

The GPU machine is lent rarely and briefly, so the training half of the script must be known
to run before one is: here it trains tiny SepConv and DSepConv for a few seconds each on the
CPU (the kernel checks skip themselves without CUDA) and everything that would come back
from the device is checked: names, sizes, count, weights that load, a finite held-out PSNR.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

from sepconv_cli.models.registry import build_model, load_weights, read_weights_file
from tests.conftest import TINY_DSEPCONV, TINY_SEPCONV

ROOT = Path(__file__).resolve().parents[1]
TINY = {"sepconv": TINY_SEPCONV, "dsepconv": TINY_DSEPCONV}


def gpu_train() -> ModuleType:
    """benchmarks/gpu_train.py as a module (benchmarks/ is no package)."""
    if "gpu_train" in sys.modules:
        return sys.modules["gpu_train"]
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "benchmarks" / "gpu_train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_train"] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def make_photos(folder: Path, count: int = 3, side: int = 96) -> Path:
    """Smooth random textures as JPEGs: stand-ins for the photographs the scenes are cut from."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        image = cv2.resize(coarse, (side + 16 * k, side), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"photo{k}.jpg"), image)
    return folder


def dry_run_env(tmp_path: Path, **changes: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GPU_TRAIN", "GPU_CHECK"))}
    scratch = tmp_path / "tmp"  # the scripts' mktemp work folders, removed with tmp_path
    scratch.mkdir()
    env.update({
        "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "GPU_TRAIN_DRY_RUN": "1", "TMPDIR": str(scratch),
        # Never the GPU path here, even on a machine that has one: that is minutes of checks.
        "CUDA_VISIBLE_DEVICES": "",
        # The PyTorch ops: compiling the CPU kernels first would take longer than the test.
        "SEPCONV_NO_EXT": "1", "OMP_NUM_THREADS": "1",
        "GPU_TOTAL_BUDGET_S": "90", "GPU_TRAIN_SECONDS": "6", "GPU_TRAIN_OVERHEAD_S": "12",
        "GPU_TRAIN_PHOTOS": str(make_photos(tmp_path / "photos")),
        "GPU_TRAIN_SEPCONV_CONFIG": json.dumps(TINY_SEPCONV), "GPU_TRAIN_DSEPCONV_CONFIG": json.dumps(TINY_DSEPCONV),
        "GPU_TRAIN_CROP": "32", "GPU_TRAIN_SCENE_SIZE": "48", "GPU_TRAIN_BATCH": "4",
        "GPU_TRAIN_SCENES_PER_EPOCH": "32", "GPU_TRAIN_VAL_SCENES": "4", "GPU_TRAIN_WORKERS": "0",
    })
    env.update(changes)
    return env


@pytest.mark.slow
def test_cpu_dry_run_trains_both_models_and_returns_what_the_device_tool_accepts(tmp_path: Path) -> None:
    # A budget with room for a busy machine: both models must train, whatever else runs.
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=dry_run_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    out = tmp_path / "out"
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"gpu_check.json", "logs.tar.gz", "gpu_train.json", "train_logs.tar.gz",
            "sepconv.fp16.pt", "dsepconv.fp16.pt"} <= names
    assert len(files) <= 8 and sum(p.stat().st_size for p in files) <= 64 * 2**20
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and p.stat().st_size <= 16 * 2**20 for p in files)

    check = json.loads((out / "gpu_check.json").read_text())
    assert {s["step"]: s.get("skipped") for s in check["steps"]}["build"] == "no CUDA GPU visible to PyTorch"
    report = json.loads((out / "gpu_train.json").read_text())
    assert report["dry_run"] and report["weights_format"] == "fp16"
    frames = torch.rand(2, 1, 3, 64, 96)
    for model in ("sepconv", "dsepconv"):
        entry = report["models"][model]
        assert entry["rc"] == 0 and entry["steps"] >= 1 and entry["files"] == [f"{model}.fp16.pt"]
        assert math.isfinite(entry["psnr"]) and 5 < entry["psnr"] < 60, entry
        stored = read_weights_file(out / entry["files"][0])
        assert stored["model"] == model and stored["metadata"]["stored_as"] == "fp16"
        assert {t.dtype for t in stored["tensors"].values()} == {torch.float16}
        network = load_weights(out / entry["files"][0], model=model)
        assert network.config == build_model(model, TINY[model]).config
        assert all(p.dtype == torch.float32 for p in network.parameters())
        with torch.no_grad():
            middle = network(frames[0], frames[1])
        assert middle.shape == (1, 3, 64, 96) and torch.isfinite(middle).all()

    with tarfile.open(out / "train_logs.tar.gz") as tar:
        members = set(tar.getnames())
    assert {"gpu_train.log", "sepconv.log", "dsepconv.log", "sepconv/summary.json", "dsepconv/metrics.jsonl"} <= members
    assert not any(name.endswith((".ckpt", ".pt")) for name in members)


def test_bad_settings_fail_in_one_line_before_anything_runs(tmp_path: Path) -> None:
    env = dry_run_env(tmp_path, GPU_TRAIN_PHOTOS=str(tmp_path / "missing"))
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"gpu_train: error: GPU_TRAIN_PHOTOS={tmp_path / 'missing'}: no such folder " \
        "(make one with: python benchmarks/gpu_train.py --pack-photos SRC DST)"
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_full_size_weights_come_back_as_int8_parts_and_fp16_is_refused(tmp_path: Path) -> None:
    module = gpu_train()
    env = {"GPU_TRAIN_PHOTOS": str(make_photos(tmp_path / "photos")), "GPU_TRAIN_DRY_RUN": "1"}
    settings = module.read_settings(tmp_path / "out", env, cuda=False)
    plan = module.plan_weights(settings, reserve_files=2)
    # fp16 of both full-size models is ~87 MB: over the 64 MiB that come back.
    assert plan["format"] == "int8" and plan["files"] == 4
    assert 20e6 < plan["predicted_bytes"]["sepconv"] < 24e6
    with pytest.raises(module.SettingsError, match="would not come back"):
        module.plan_weights(module.read_settings(tmp_path / "out", {**env, "GPU_TRAIN_WEIGHTS": "fp16"}, cuda=False), 2)
    one = module.read_settings(tmp_path / "out", {**env, "GPU_TRAIN_MODELS": "sepconv"}, cuda=False)
    assert module.plan_weights(one, 2)["format"] == "fp16"


def test_split_parts_join_to_the_same_bytes(tmp_path: Path) -> None:
    module = gpu_train()
    data = np.random.default_rng(1).bytes(2500)
    path = tmp_path / "w.int8.pt"
    path.write_bytes(data)
    parts = module.split_file(path, 1000)
    assert [p.name for p in parts] == ["w.int8.pt.part0", "w.int8.pt.part1", "w.int8.pt.part2"] and not path.exists()
    assert module.join_parts(list(reversed(parts)), tmp_path / "joined.pt").read_bytes() == data
    small = tmp_path / "small.pt"
    small.write_bytes(b"x" * 10)
    assert module.split_file(small, 1000) == [small]


def test_int8_and_fp16_predictions_match_written_files(tmp_path: Path) -> None:
    module = gpu_train()
    from sepconv_cli.models.registry import model_config, save_weights

    network = build_model("dsepconv", TINY_DSEPCONV)
    save_weights(network, tmp_path / "int8.pt", quantised=True)
    module.write_fp16_weights(network.state_dict(), "dsepconv", model_config(network), tmp_path / "fp16.pt", {})
    for fmt in ("int8", "fp16"):
        actual = (tmp_path / f"{fmt}.pt").stat().st_size
        predicted = module.predicted_bytes("dsepconv", TINY_DSEPCONV, fmt)
        assert actual <= predicted < actual + 2**20, (fmt, actual, predicted)
