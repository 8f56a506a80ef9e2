"""``sepconv train``: data, the loop, checkpoints and resume, torchrun, export, bad input.

Everything runs a tiny SepConv (a few thousand parameters) on 32×32 crops of a tiny
patch cache whose triplets are a smooth texture moving linearly, so the middle frame is
learnable and a few steps visibly reduce the loss.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.data.cache import CacheIndex, PatchCache, UnitRecord, write_index, write_shard
from sepconv_cli.data.dataset import TripletDataset, augment, split_cache, to_frames
from sepconv_cli.errors import OutputError, SepconvError
from sepconv_cli.losses import l1_loss
from sepconv_cli.models.registry import MODELS, build_model, load_weights
from sepconv_cli.training import TrainConfig, TrainingError, read_checkpoint, train
from tests.conftest import TINY_SEPCONV

PATCH = 40
CROP = 32
TINY_ARGS = ["--model-config", json.dumps(TINY_SEPCONV), "--crop", str(CROP), "--batch-size", "4", "--workers", "0"]


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """A smooth random (side, side, 3) uint8 texture: bilinear upsampling of 8×8 noise."""
    coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    axis = np.linspace(0, 7, side)
    i0 = np.minimum(axis.astype(int), 6)
    f = (axis - i0)[:, None]
    rows = coarse[i0] * (1 - f[:, :, None]) + coarse[i0 + 1] * f[:, :, None]
    cols = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    return cols.round().astype(np.uint8)


def make_cache(root: Path, units: int = 3, per_unit: int = 8, size: int = PATCH, seed: int = 0) -> Path:
    """A patch cache of ``units`` shards of triplets translating by up to ±3 px a frame."""
    rng = np.random.default_rng(seed)
    index = CacheIndex(source="test", kind="frames", parameters={"size": size}, seed=seed, size=size)
    for unit in range(units):
        triplets = []
        for _ in range(per_unit):
            big = texture(rng, size + 16)
            dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
            frames = [big[8 + dy * t : 8 + dy * t + size, 8 + dx * t : 8 + dx * t + size].transpose(2, 0, 1)
                      for t in (-1, 0, 1)]
            triplets.append(np.stack(frames))
        shard = write_shard(root, unit, np.stack(triplets))
        index.units.append(UnitRecord(number=unit, key=f"test:{unit}", shard=shard, patches=per_unit))
    index.complete = True
    write_index(root, index)
    return root


def tiny_config(cache: Path, **changes: object) -> TrainConfig:
    values = dict(model="sepconv", model_config=dict(TINY_SEPCONV), data=str(cache), crop=CROP, batch_size=4,
                  workers=0, epochs=None, max_steps=6, log_every=1, val_fraction=0.2, samples=2, lr=3e-3)
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> object:
    """Tiny networks run fastest on one thread, most of all on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cache(tmp_path_factory.mktemp("data") / "cache")


@pytest.fixture(scope="module")
def trained(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 24-step tiny run (6 epochs of 4 steps), shared by the output tests."""
    run = tmp_path_factory.mktemp("runs") / "run"
    train(tiny_config(cache, max_steps=24), run)
    return run


def model_state(run: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoints" / name)["model_state"]


# --------------------------------------------------------------------------------------
# Data


def test_augment_transforms_are_equally_likely_and_exact() -> None:
    rng0 = np.random.default_rng(1)
    triplet = rng0.integers(0, 256, (3, 3, 6, 6), dtype=np.uint8)
    triplet[1] = 7  # frames tell apart: only the middle one is constant
    crop = triplet  # crop = size: the window is the whole patch
    candidates = {
        "identity": crop, "hflip": crop[..., ::-1], "vflip": crop[..., ::-1, :],
        "rot+90": np.rot90(crop, 1, (-2, -1)), "rot-90": np.rot90(crop, -1, (-2, -1)),
    }
    counts = {name: 0 for name in candidates}
    swaps = 0
    n = 4000
    for i in range(n):
        out = augment(triplet, np.random.default_rng([0, 0, i]), 6)
        assert out.shape == (3, 3, 6, 6) and out.flags["C_CONTIGUOUS"]
        assert (out[1] == 7).all()  # the middle frame stays in the middle
        swapped = not any(np.array_equal(out, c) for c in candidates.values())
        swaps += swapped
        view = out[::-1] if swapped else out
        matches = [name for name, c in candidates.items() if np.array_equal(view, c)]
        assert len(matches) == 1
        counts[matches[0]] += 1
    for name in ("identity", "hflip", "vflip"):
        assert abs(counts[name] / n - 0.25) < 0.03, counts
    assert abs((counts["rot+90"] + counts["rot-90"]) / n - 0.25) < 0.03, counts
    assert abs(counts["rot+90"] - counts["rot-90"]) / n < 0.04, counts
    assert abs(swaps / n - 0.5) < 0.03


def test_dataset_crops_are_deterministic_per_epoch(cache: Path) -> None:
    data = TripletDataset(PatchCache(cache), crop=CROP, seed=3)
    first = data[5]
    assert first.dtype == torch.uint8 and first.shape == (3, 3, CROP, CROP)
    assert torch.equal(first, data[5])
    data.set_epoch(1)
    assert not torch.equal(first, data[5])  # a new crop/augmentation each epoch
    centre = TripletDataset(PatchCache(cache), crop=CROP, augmented=False)[5]
    raw = torch.from_numpy(np.array(PatchCache(cache)[5]))
    assert torch.equal(centre, raw[..., 4:36, 4:36])
    frame1, middle, frame2 = to_frames(centre[None])
    assert frame1.shape == (1, 3, CROP, CROP) and frame1.dtype == torch.float32
    assert torch.allclose(middle * 255, raw[1, :, 4:36, 4:36].float()[None])


def test_validation_split_holds_out_whole_units(cache: Path) -> None:
    patches = PatchCache(cache)
    train_idx, val_idx = split_cache(patches, 0.3, seed=0)
    assert len(val_idx) == 8 and set(train_idx).isdisjoint(val_idx)
    assert len(train_idx) + len(val_idx) == len(patches)
    assert len({int(i) // 8 for i in val_idx}) == 1  # one whole shard of 8 triplets
    assert len(split_cache(patches, 0.0)[1]) == 0


# --------------------------------------------------------------------------------------
# The loop


def test_training_reduces_loss_on_a_fixed_batch(cache: Path, trained: Path) -> None:
    batch = torch.stack([TripletDataset(PatchCache(cache), augmented=False, crop=CROP)[i] for i in range(8)])
    frame1, middle, frame2 = to_frames(batch)
    torch.manual_seed(0)  # the trainer's initial weights come from seed 0
    network = build_model("sepconv", TINY_SEPCONV)
    with torch.no_grad():
        before = float(l1_loss(network(frame1, frame2), middle))
        network.load_state_dict(model_state(trained))
        after = float(l1_loss(network(frame1, frame2), middle))
    assert after < 0.9 * before, (before, after)


def test_run_folder_contents(trained: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "curves.png", "summary.json", "weights.pt",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "samples/epoch_001.png", "samples/epoch_006.png"):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert config["config"]["model_config"]["kernel_size"] == 5 and config["losses"] == "l1:1"
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 25))
    assert [r["step"] for r in rows if r["kind"] == "val"] == [4, 8, 12, 16, 20, 24]
    header = (trained / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["kind", "step", "epoch", "time", "lr", "loss"] and len(header) == len(set(header))
    checkpoint = read_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert (checkpoint["step"], checkpoint["epoch"], checkpoint["epoch_step"]) == (24, 6, 0)
    assert checkpoint["config"]["lr"] == 3e-3 and "optimizer" in checkpoint and "rng" in checkpoint
    best = read_checkpoint(trained / "checkpoints" / "best.ckpt")
    assert best["best"]["psnr"] == pytest.approx(max(r["psnr"] for r in rows if r["kind"] == "val"), abs=1e-4)
    import cv2

    sheet = cv2.imread(str(trained / "samples" / "epoch_006.png"))
    assert sheet.shape[1] == 4 * CROP + 3 * 4 and sheet.shape[0] > 2 * CROP  # 4 columns, 2 sample rows


def test_exported_weights_load_in_interpolate(trained: Path, tmp_path: Path) -> None:
    network = load_weights(trained / "weights.pt", model="sepconv")
    reference = build_model("sepconv", TINY_SEPCONV)
    reference.load_state_dict(model_state(trained))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():  # int8 storage changes outputs by far less than a grey level
        assert (network(x, x) - reference(x, x)).abs().max() < 2 / 255
    from tests.media import make_video

    video = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    result = CliRunner().invoke(cli, ["interpolate", str(video), "--weights", str(trained / "weights.pt"),
                                      "--out", str(tmp_path / "out.mp4"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.mp4").stat().st_size > 0


def test_resume_equals_uninterrupted_run(cache: Path, tmp_path: Path) -> None:
    # 7 steps cross epoch boundaries (4 steps an epoch) and stop mid-epoch.
    train(tiny_config(cache, max_steps=7), tmp_path / "whole")
    train(tiny_config(cache, max_steps=3), tmp_path / "parts")
    assert read_checkpoint(tmp_path / "parts" / "checkpoints" / "last.ckpt")["epoch_step"] == 3
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--resume", str(tmp_path / "parts"), "--max-steps", "7"])
    assert result.exit_code == 0, result.output
    whole, parts = model_state(tmp_path / "whole"), model_state(tmp_path / "parts")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    a = read_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")["optimizer"]["state"]
    b = read_checkpoint(tmp_path / "parts" / "checkpoints" / "last.ckpt")["optimizer"]["state"]
    assert all(torch.equal(a[k]["exp_inf"], b[k]["exp_inf"]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 8))
    # Changing what the run learns is refused; a folder of another model too.
    result = runner.invoke(cli, ["train", "--resume", str(tmp_path / "parts"), "--lr", "0.1"])
    assert result.exit_code == 2 and "cannot change when resuming" in result.output
    if "dsepconv" in MODELS:
        result = runner.invoke(cli, ["train", "--resume", str(tmp_path / "parts"), "--model", "dsepconv"])
        assert result.exit_code == 3 and "is a sepconv run, not dsepconv" in result.output


def test_init_fine_tunes_from_weights(trained: Path, cache: Path, tmp_path: Path) -> None:
    start = load_weights(trained / "weights.pt").state_dict()
    # A vanishing learning rate: the run's weights are the file's, so it started from them.
    train(tiny_config(cache, init=str(trained / "weights.pt"), model_config={}, max_steps=1, lr=1e-12), tmp_path / "ft")
    tuned = model_state(tmp_path / "ft")
    assert all(torch.allclose(start[k], tuned[k], atol=1e-9) for k in start)
    if "dsepconv" in MODELS:
        with pytest.raises(SepconvError, match="holds weights for 'sepconv', not 'dsepconv'"):
            train(tiny_config(cache, model="dsepconv", init=str(trained / "weights.pt"), model_config={}),
                  tmp_path / "wrong")


def test_warmup_ramps_the_learning_rate_and_resumes_on_the_ramp(cache: Path, tmp_path: Path) -> None:
    train(tiny_config(cache, max_steps=6, warmup_steps=4, optimizer="adam", lr=1e-3), tmp_path / "whole")
    rows = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if r["kind"] == "train"] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert "exp_avg_sq" in next(iter(read_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
                                     ["optimizer"]["state"].values()))
    # Stopped on the ramp and resumed: the same weights as the uninterrupted run.
    train(tiny_config(cache, max_steps=2, warmup_steps=4, optimizer="adam", lr=1e-3), tmp_path / "parts")
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "parts"), "--max-steps", "6"])
    assert result.exit_code == 0, result.output
    whole, parts = model_state(tmp_path / "whole"), model_state(tmp_path / "parts")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_time_budget_stops_cleanly_and_saves(cache: Path, tmp_path: Path) -> None:
    result = train(tiny_config(cache, max_steps=1000, time_budget=0.001), tmp_path / "run")
    assert (result.reason, result.step) == ("time-budget", 1)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["step"] == 1
    assert load_weights(tmp_path / "run" / "weights.pt") is not None


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cache: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def failing_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = (prediction - target).abs().mean()
        return value * float("nan") if calls["n"] == 4 else value

    monkeypatch.setattr("sepconv_cli.losses.l1_loss", failing_l1)
    with pytest.raises(TrainingError, match=r"loss became nan at step 4 .*last\.ckpt \(step 2\) is kept"):
        train(tiny_config(cache, max_steps=10, checkpoint_every=2, val_fraction=0.0), tmp_path / "run")
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["model_state"].values())


def test_cli_bare_train_reads_default_cache(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEPCONV_CACHE", raising=False)
    shutil.copytree(cache, tmp_path / "cache" / "patches")
    result = CliRunner().invoke(cli, ["train", *TINY_ARGS, "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    runs = list((tmp_path / "runs").glob("sepconv-*"))
    assert len(runs) == 1 and (runs[0] / "weights.pt").is_file()
    assert f"writing to {Path('runs') / runs[0].name}" in result.output
    assert "cache/patches" in json.loads((runs[0] / "config.json").read_text())["config"]["data"]


def test_bad_input(cache: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["train", *TINY_ARGS, "--max-steps", "1", *args])
        return result.exit_code, result.output

    code, out = run("--data", str(tmp_path / "missing"))
    assert code == 3 and "does not exist; run 'sepconv prepare' first" in out
    (tmp_path / "empty").mkdir()
    code, out = run("--data", str(tmp_path / "empty"))
    assert code == 3 and "not a patch cache" in out
    old = tmp_path / "old"
    shutil.copytree(cache, old)
    index = json.loads((old / "index.json").read_text())
    (old / "index.json").write_text(json.dumps({**index, "version": 99}))
    code, out = run("--data", str(old))
    assert code == 3 and "format version 99" in out
    code, out = run("--data", str(cache), "--loss", "l3")
    assert code == 3 and "unknown loss 'l3'" in out
    code, out = run("--data", str(cache), "--loss", "l1+vgg:1e-5")
    assert code == 3 and "--vgg-weights" in out
    code, out = run("--data", str(cache), "--crop", "40")
    assert code == 3 and "divisible by 32" in out
    code, out = run("--data", str(cache), "--model-config", "kernel_size=4")
    assert code == 3 and "kernel_size must be odd" in out
    code, out = run("--data", str(cache), "--batch-size", "64")
    assert code == 3 and "fewer than one batch" in out
    code, out = run("--resume", str(tmp_path / "nothing"))
    assert code == 3 and "no such run folder" in out
    assert run("--data", str(cache), "--out", str(tmp_path / "run"))[0] == 0
    code, out = run("--data", str(cache), "--out", str(tmp_path / "run"))
    assert code == 4 and "--resume" in out
    with pytest.raises(OutputError):  # the library refuses the same
        train(tiny_config(cache), tmp_path / "run")


def test_dsepconv_trains_with_its_objective(cache: Path, tmp_path: Path) -> None:
    tiny = {"kernel_size": 3, "channels": [4, 4, 8, 8, 8]}
    config = tiny_config(cache, model="dsepconv", model_config=tiny, max_steps=24)
    result = train(config, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = rows[0]
    assert {"loss_charbonnier", "loss_flip-charbonnier", "loss_gradient"} <= set(first)
    assert first["loss"] == pytest.approx(first["loss_charbonnier"] + first["loss_flip-charbonnier"] + first["loss_gradient"],
                                          rel=1e-6)
    trained_model = load_weights(result.weights, model="dsepconv")
    assert trained_model.config.kernel_size == 3
    # A few steps must reduce the error on a fixed batch, as for SepConv.
    batch = torch.stack([TripletDataset(PatchCache(cache), augmented=False, crop=CROP)[i] for i in range(8)])
    frame1, middle, frame2 = to_frames(batch)
    torch.manual_seed(0)  # the trainer's initial weights come from seed 0
    untrained = build_model("dsepconv", tiny)
    with torch.no_grad():
        before = float(l1_loss(untrained(frame1, frame2), middle))
        after = float(l1_loss(trained_model(frame1, frame2), middle))
    assert after < 0.9 * before, (before, after)


def test_procedural_scenes_on_the_fly(tmp_path: Path) -> None:
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        cv2.imwrite(str(photos / f"p{k}.png"), texture(rng, 96))
    config = tiny_config(None, data=None, synthetic=str(photos), scenes_per_epoch=8, val_scenes=2, max_steps=2)
    result = train(config, tmp_path / "run")
    assert result.step == 2 and result.best_psnr is not None


# --------------------------------------------------------------------------------------
# Distributed


def torchrun_train(cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Three steps of ``sepconv train`` in two gloo processes on the CPU, into ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sepconv_cli", "train", "--data", str(cache), "--out", str(out), *TINY_ARGS,
               "--max-steps", "3", "--val-fraction", "0.2", "--device", "cpu", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_torchrun_two_gloo_processes_end_with_identical_weights(cache: Path, tmp_path: Path) -> None:
    done = torchrun_train(cache, tmp_path / "ddp", "--log-every", "1")
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["rank_digests"]) == 2
    assert summary["ranks_in_sync"] and len(set(summary["rank_digests"])) == 1
    assert done.stderr.count("writing to") == 1  # only rank 0 reports
    # The global batch of 4 is split 2 + 2 over the same samples a single process sees:
    # the first step's loss (before any update) agrees with a one-process run.
    single = tmp_path / "single"
    train(tiny_config(cache, max_steps=1, val_fraction=0.2), single)
    loss = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    loss_single = json.loads((single / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert loss == pytest.approx(loss_single, rel=1e-5)


def test_every_option_of_every_command_says_what_it_does() -> None:
    missing = [f"{name} --{p.name}" for name, command in cli.commands.items() for p in command.params
               if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert missing == []


def test_train_help_states_the_default_loss_of_each_model_and_the_readme_lists_every_loss() -> None:
    from sepconv_cli.losses import SHORTHANDS, TERMS, default_losses

    help_text = " ".join(CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output.split())
    assert "[default: l1 for sepconv and flowsep, dsepconv for dsepconv]" in help_text
    assert [default_losses(m) for m in ("sepconv", "flowsep", "dsepconv")] == [["l1"], ["l1"], ["dsepconv"]]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    training = readme[readme.index("## Training: `sepconv train`"):]
    assert [name for name in (*TERMS, *SHORTHANDS) if f"`{name}`" not in training] == []


def test_clip_grad_bounds_the_applied_gradient_and_logs_the_norm_before_it(cache: Path, tmp_path: Path) -> None:
    from sepconv_cli.training import Trainer, setup_distributed

    config = tiny_config(cache, max_steps=2, clip_grad=1e-3, device="cpu")
    trainer = Trainer(config, tmp_path / "run", setup_distributed("cpu"), resume=False, args=[], note=lambda _: None,
                      progress=lambda _: None)
    trainer.setup()
    trainer.model = trainer.network  # what run() wraps it in on one process
    batch = next(iter(trainer.loader))
    values = trainer._train_step(batch)
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    applied = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    logged = float(values[-1])
    assert logged > 1e-2  # a fresh tiny network's gradient is far above the limit ...
    assert applied == pytest.approx(1e-3, rel=1e-3)  # ... and the step applied it rescaled to the limit


def test_train_rows_carry_the_gradient_norm(trained: Path) -> None:
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert all(0 < r["grad_norm"] <= r["grad_max"] and np.isfinite(r["grad_max"]) for r in rows)


# --------------------------------------------------------------------------------------
# The weights' moving average (--ema)


def test_weight_average_follows_the_warmed_up_decay_worked_by_hand() -> None:
    from sepconv_cli.training import WeightAverage, warm_decay

    assert [warm_decay(0.999, n) for n in (0, 1, 90)] == pytest.approx([0.1, 2 / 11, 0.91])
    assert [warm_decay(0.5, n) for n in (7, 8, 9, 50)] == pytest.approx([8 / 17, 0.5, 0.5, 0.5])
    torch.manual_seed(0)
    live = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in live.state_dict().items()}
    average = WeightAverage(live, 0.5)
    assert all(torch.equal(average.module.state_dict()[k], start[k]) for k in start)  # n = 0: the start itself
    names = [name for name, _ in live.named_parameters()]
    expected = {name: start[name].double() for name in names}
    generator = torch.Generator().manual_seed(1)
    for n in range(12):  # past n = 8, where the warm-up (1 + n) / (10 + n) reaches the decay 0.5
        with torch.no_grad():
            for name, p in live.named_parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
            live[1].running_mean.fill_(n)
            live[1].num_batches_tracked.fill_(n)
        d = min(0.5, (1 + n) / (10 + n))
        for name, p in live.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach().double()
        average.update(live)
    assert average.updates == 12
    state = average.module.state_dict()
    for name in names:
        assert torch.allclose(state[name].double(), expected[name], atol=1e-6), name
        assert not torch.allclose(state[name], live.state_dict()[name], atol=1e-3), name  # an average, not a copy
    assert float(state["1.running_mean"][0]) == 11 and int(state["1.num_batches_tracked"]) == 11  # buffers copied
    # Saved and restored, it goes on exactly as the one that was never stopped.
    restored = WeightAverage(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)), 0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 12
    for one in (average, restored):
        one.update(live)
    assert all(torch.equal(average.module.state_dict()[k], restored.module.state_dict()[k]) for k in start)


def stored_tensors(weights: Path) -> dict[str, torch.Tensor]:
    """A weights file's tensors as written (int8 entries as their dequantised values)."""
    from sepconv_cli.models.registry import dequantise, read_weights_file

    tensors = read_weights_file(weights)["tensors"]
    return {k: dequantise(v) if isinstance(v, dict) else v for k, v in tensors.items()}


def as_stored(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as ``save_weights`` writes a SepConv (large weights through int8 and back)."""
    from sepconv_cli.models.registry import QUANTISE_MIN_ELEMENTS, dequantise, quantise

    return {k: dequantise(quantise(v)) if v.dim() >= 2 and v.numel() >= QUANTISE_MIN_ELEMENTS else v.float()
            for k, v in state.items()}


def test_ema_run_validates_samples_and_exports_the_average_while_the_live_weights_train_on(
        cache: Path, trained: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = [*TINY_ARGS, "--data", str(cache), "--init", str(trained / "weights.pt"), "--validate-init",
              "--max-steps", "6", "--val-fraction", "0.2", "--samples", "2", "--lr", "3e-3"]
    for name, extra in (("plain", []), ("ema", ["--ema", "0.9"])):
        result = runner.invoke(cli, ["train", *common, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    plain, ema = read_checkpoint(tmp_path / "plain" / "checkpoints" / "last.ckpt"), read_checkpoint(
        tmp_path / "ema" / "checkpoints" / "last.ckpt")
    assert plain["ema"] is None and (ema["ema"]["decay"], ema["ema"]["updates"]) == (0.9, 6)
    # The average takes nothing from the training: the live weights are the plain run's, bit for bit.
    assert all(torch.equal(plain["model_state"][k], ema["model_state"][k]) for k in plain["model_state"])
    live, averaged = ema["model_state"], ema["ema"]["state"]
    assert max(float((averaged[k] - live[k]).abs().max()) for k in live) > 1e-4
    exported, expected = stored_tensors(tmp_path / "ema" / "weights.pt"), as_stored(averaged)
    assert all(torch.equal(exported[k], expected[k]) for k in expected)  # weights.pt is the average ...
    stored_live = as_stored(live)
    assert not all(torch.equal(exported[k], stored_live[k]) for k in stored_live)  # ... not the live weights
    # Validated is the average: the same init score at step 0 (the average is the init there), other scores after.
    def val_rows(name: str) -> list[dict[str, float]]:
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r["kind"] == "val"]

    assert [r["step"] for r in val_rows("ema")] == [0, 4, 6]
    assert val_rows("ema")[0]["psnr"] == val_rows("plain")[0]["psnr"]
    assert [r["psnr"] for r in val_rows("ema")[1:]] != [r["psnr"] for r in val_rows("plain")[1:]]
    best = read_checkpoint(tmp_path / "ema" / "checkpoints" / "best.ckpt")
    assert best["best"]["psnr"] == pytest.approx(max(r["psnr"] for r in val_rows("ema")), abs=1e-4)
    from sepconv_cli.training import export_checkpoint

    export_checkpoint(tmp_path / "ema" / "checkpoints" / "best.ckpt", tmp_path / "best.pt")  # what best.pt is
    exported, expected = stored_tensors(tmp_path / "best.pt"), as_stored(best["ema"]["state"])
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
    sheet = "samples/epoch_001.png"  # the prediction column is the average's
    assert (tmp_path / "ema" / sheet).read_bytes() != (tmp_path / "plain" / sheet).read_bytes()


def test_resume_continues_the_average_exactly_and_starts_one_for_a_run_without(cache: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    train(tiny_config(cache, max_steps=7, ema=0.9), tmp_path / "whole")
    train(tiny_config(cache, max_steps=3, ema=0.9), tmp_path / "parts")
    result = runner.invoke(cli, ["train", "--resume", str(tmp_path / "parts"), "--max-steps", "7"])
    assert result.exit_code == 0, result.output
    whole = read_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    parts = read_checkpoint(tmp_path / "parts" / "checkpoints" / "last.ckpt")
    assert whole["ema"]["updates"] == parts["ema"]["updates"] == 7
    for key in ("model_state", "ema"):
        a, b = (whole[key], parts[key]) if key == "model_state" else (whole[key]["state"], parts[key]["state"])
        assert all(torch.equal(a[k], b[k]) for k in a), key
    a, b = stored_tensors(tmp_path / "whole" / "weights.pt"), stored_tensors(tmp_path / "parts" / "weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A run without an average (or from before --ema) resumed with one: it starts from the live weights.
    train(tiny_config(cache, max_steps=3), tmp_path / "old")
    before = model_state(tmp_path / "old")
    result = runner.invoke(cli, ["train", "--resume", str(tmp_path / "old"), "--max-steps", "4", "--ema", "0.9"])
    assert result.exit_code == 0, result.output
    after = read_checkpoint(tmp_path / "old" / "checkpoints" / "last.ckpt")
    assert after["config"]["ema"] == 0.9 and after["ema"]["updates"] == 1
    for k, value in after["ema"]["state"].items():  # one update at n = 0: decay 0.1
        assert torch.allclose(value, 0.1 * before[k] + 0.9 * after["model_state"][k], atol=1e-7, rtol=1e-6), k
    assert max(float((after["ema"]["state"][k] - after["model_state"][k]).abs().max()) for k in before) > 1e-5


def test_ema_outside_zero_to_one_is_refused_in_one_line(cache: Path, tmp_path: Path) -> None:
    for value in ("1.5", "1", "-0.1", "nan"):
        result = CliRunner().invoke(cli, ["train", *TINY_ARGS, "--data", str(cache), "--out", str(tmp_path / "run"),
                                          "--max-steps", "1", "--ema", value])
        errors = [line for line in result.output.splitlines() if "rror" in line]
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.output, result.exception)
        assert "Traceback" not in result.output and len(errors) == 1, result.output
        assert "--ema" in errors[0] and "not a decay in [0, 1)" in errors[0], errors
    assert not (tmp_path / "run").exists()
    with pytest.raises(SepconvError, match="--ema 1.0: the decay must be at least 0"):  # the library refuses it too
        train(tiny_config(cache, ema=1.0), tmp_path / "lib")


def test_torchrun_with_ema_averages_the_synchronised_weights(cache: Path, tmp_path: Path) -> None:
    torchrun_train(cache, tmp_path / "ddp", "--ema", "0.9")
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["ranks_in_sync"]
    ddp = read_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")["ema"]
    assert ddp["updates"] == 3
    exported, expected = stored_tensors(tmp_path / "ddp" / "weights.pt"), as_stored(ddp["state"])
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
    # The same global batches on one process: the same average, up to the all-reduce's rounding.
    train(tiny_config(cache, max_steps=3, ema=0.9, lr=1e-3), tmp_path / "single")  # the command's lr
    single = read_checkpoint(tmp_path / "single" / "checkpoints" / "last.ckpt")["ema"]["state"]
    gap = max(float((ddp["state"][k] - single[k]).abs().max()) for k in single)
    assert gap < 1e-5, gap


def test_average_of_weights_files_is_the_mean_and_refuses_other_networks(tmp_path: Path) -> None:
    from sepconv_cli.models.registry import save_weights
    from sepconv_cli.training import average_weights

    torch.manual_seed(0)
    nets = [build_model("flowsep") for _ in range(3)]
    paths = []
    for i, net in enumerate(nets):
        paths.append(tmp_path / f"w{i}.pt")
        save_weights(net, paths[-1])
    averaged = average_weights(paths).state_dict()
    for key, value in averaged.items():
        expected = sum(net.state_dict()[key].double() for net in nets) / 3
        assert torch.allclose(value.double(), expected, atol=1e-7), key
    assert any(not torch.equal(value, nets[0].state_dict()[key]) for key, value in averaged.items())
    save_weights(build_model("flowsep", {"quadratic": True}), tmp_path / "other.pt")
    with pytest.raises(SepconvError, match="only one network"):
        average_weights([paths[0], tmp_path / "other.pt"])
    result = subprocess.run([sys.executable, "scripts/average_weights.py", str(tmp_path / "avg.pt"), *map(str, paths)],
                            capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert torch.equal(load_weights(tmp_path / "avg.pt").state_dict()[key], averaged[key])
    from sepconv_cli.models.registry import read_weights_file
    written = read_weights_file(tmp_path / "avg.pt")["metadata"]
    assert written["averaged"] == [p.name for p in paths] and "step" not in written  # the members have no step
    refused = subprocess.run([sys.executable, "scripts/average_weights.py", str(paths[0]), str(paths[0]), str(paths[1])],
                             capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1


def test_loss_terms_have_columns_of_their_own_beside_validation_scores(cache: Path, tmp_path: Path) -> None:
    # An "ssim" loss term once shared the CSV column of validation's SSIM.
    run = tmp_path / "run"
    train(tiny_config(cache, max_steps=4, losses=["l1", "ssim:0.1"]), run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trains = [r for r in rows if r["kind"] == "train"]
    assert all(r["loss"] == pytest.approx(r["loss_l1"] + 0.1 * r["loss_ssim"], rel=1e-4) for r in trains)
    assert all("ssim" not in r for r in trains)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert len(header) == len(set(header)) and {"loss_l1", "loss_ssim", "ssim"} <= set(header)
