"""interpolate --adapt: fine-tuning on the input's own frames (sepconv_cli.adaptation)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.adaptation import (MIN_SIDE, AdaptOptions, CannotAdapt, adapt, adaptation_key, adapted_weights,
                                    compare_held_out, held_out_choice, parse_duration, patch_sides, scale_gains,
                                    score_held_out, spread_windows, window_count, write_window_caches)
from sepconv_cli.cli import cli
from sepconv_cli.data.cache import AFTER, BEFORE, BOTH, PatchCache, valid_name
from sepconv_cli.errors import InputError
from sepconv_cli.evaluation.adapted import adapted_methods, input_frames
from sepconv_cli.evaluation.benchmarks import Dataset, Sample, Triplet
from sepconv_cli.evaluation.methods import build_methods
from sepconv_cli.evaluation.runner import run_evaluation
from sepconv_cli.models.registry import build_model, load_weights, save_weights
from sepconv_cli.training import evaluate, held_out_dataset, parameter_digest
from tests.conftest import TINY_SEPCONV
from tests.interrupts import interrupt_when, interrupted_cleanly
from tests.media import decode_rgb, make_video

ROOT = Path(__file__).resolve().parents[1]
# Small enough for seconds on two cores: 64-px patches, a few steps (with a ramp that short).
TINY = AdaptOptions(steps=4, batch_size=4, crop=64, patch=64, patches=2, triplets=8, held_out_every=3, val_patch=64,
                    warmup_steps=2)
# As few steps, with the default patch sides: the frame size chooses the sides used.
FEW_STEPS = AdaptOptions(steps=4, batch_size=4, patches=2, triplets=8, held_out_every=3, warmup_steps=2)


def moving_frames(count: int = 24, size: tuple[int, int] = (96, 128), speed: float = 3.0,
                  accel: float = 0.0) -> list[np.ndarray]:
    """A smooth random texture panning ``speed`` px per frame, ``accel`` px per frame² faster each frame."""
    rng = np.random.default_rng(0)
    import cv2

    h, w = size
    big = cv2.GaussianBlur(rng.integers(0, 256, (h * 2, w * 4, 3)).astype(np.uint8), (0, 0), 2.0)
    shifts = [round(10 + k * speed + accel * k * k / 2) for k in range(count)]
    return [np.ascontiguousarray(big[20 : 20 + h, x : x + w]) for x in shifts]


def test_durations_read_as_a_user_writes_them() -> None:
    assert parse_duration("300") == 300
    assert parse_duration("5m") == 300
    assert parse_duration("1m30s") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("1:30") == 90
    assert parse_duration("1h") == 3600
    for bad in ("", "soon", "-5", "0", "5x"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize("total", [None, 100])
def test_windows_are_consecutive_triplets_and_their_neighbours_spread_over_the_whole_input(total: int | None) -> None:
    frames = [np.full((4, 4, 3), k, np.uint8) for k in range(100)]
    chosen = spread_windows(iter(frames), 8, total)
    starts = [w.start for w in chosen]
    assert len(chosen) == 8
    for w in chosen:
        assert [int(f[0, 0, 0]) for f in w.triplet] == [w.start, w.start + 1, w.start + 2]
        # The neighbours are as far outside the triplet as its outer frames lie apart.
        assert w.before is not None and int(w.before[0, 0, 0]) == w.start - 2 or w.before is None and w.start < 2
        assert w.after is not None and int(w.after[0, 0, 0]) == w.start + 4 or w.after is None and w.start + 4 >= 100
    assert all(b - a >= 3 for a, b in zip(starts, starts[1:]))  # no frame in two triplets
    assert starts[0] < 15 and starts[-1] > 70  # the whole clip, not its start
    assert chosen[0].before is None  # the clip's first frame starts the first window


def test_the_ends_of_the_input_have_no_neighbours_and_shared_frames_are_held_once() -> None:
    frames = [np.full((4, 4, 3), k, np.uint16) * 256 for k in range(12)]
    chosen = spread_windows(iter(frames), 4, 12)  # starts 0, 3, 6, 9
    assert [w.start for w in chosen] == [0, 3, 6, 9]
    assert chosen[0].before is None and chosen[-1].after is None  # frames -2 and 13 do not exist
    assert all(w.triplet[0].dtype == np.uint8 for w in chosen)
    # 16-bit input is converted once per frame: a neighbour is the very array of the other window's triplet frame.
    assert chosen[1].before is chosen[0].triplet[1] and chosen[0].after is chosen[1].triplet[1]


@pytest.mark.parametrize("total", [None, 2000])
def test_the_frames_held_stay_bounded_and_no_more_than_the_triplets_held(total: int | None) -> None:
    import weakref

    assert window_count(120) * 5 <= 120 * 3 and window_count(120) == 72
    live, peak = 0, 0

    def freed() -> None:
        nonlocal live
        live -= 1

    def frames() -> Iterator[np.ndarray]:
        nonlocal live, peak
        for k in range(2000):
            frame = np.full((2, 2, 3), k % 256, np.uint8)
            weakref.finalize(frame, freed)
            live += 1
            peak = max(peak, live)
            yield frame
            del frame

    count = 10
    chosen = spread_windows(frames(), count, total)
    assert len(chosen) == count and chosen[-1].start > 1500
    # Fewer than twice ``count`` windows of five frames, the last frames read and the windows awaiting their after.
    assert peak <= 5 * 2 * count + 8, peak


def test_adaptation_that_cannot_help_keeps_the_original_weights(tmp_path: Path, flowsep_weights: Path) -> None:
    # Learning rates this large can only wreck the network (0.5) or make it diverge (5):
    # the held-out triplets, or the NaN loss, must say so.
    for lr in (0.5, 5.0):
        # (with procedural scenes mixed in once, so that path runs too)
        options = AdaptOptions(**{**TINY.__dict__, "lr": lr, "scenes": lr == 0.5})
        result = adapt(moving_frames(), flowsep_weights, tmp_path / f"work{lr}", options)
        assert not result.adapted, lr
        assert result.weights.read_bytes() == flowsep_weights.read_bytes()
        assert result.gain == 0.0
        assert "kept the original weights" in result.summary()


def test_adaptation_that_helps_is_used_and_says_by_how_much(tmp_path: Path) -> None:
    # A network whose head is noise does worse than it could on any video: adapting must fix some of it.
    torch.manual_seed(0)
    network = build_model("flowsep", {"channels": [4, 8, 8, 8]})
    torch.nn.init.normal_(network.head.weight, std=0.05)
    base = tmp_path / "noisy.pt"
    save_weights(network, base)
    options = AdaptOptions(**{**TINY.__dict__, "steps": 12, "lr": 3e-3})
    result = adapt(moving_frames(), base, tmp_path / "work", options)
    assert result.adapted, result.summary()
    assert result.gain > result.margin >= options.min_gain
    assert parameter_digest(load_weights(result.weights)) != parameter_digest(load_weights(base))
    assert f"{result.gain:+.2f} dB" in result.summary()
    assert result.tried == result.weights and len(result.scale_gains) in (1, 2)


def test_a_second_run_on_the_same_input_reuses_the_kept_adaptation(tmp_path: Path, flowsep_weights: Path) -> None:
    video = tmp_path / "clip.mkv"
    video.write_bytes(b"stand-in bytes: only the cache key reads the file")
    calls = []

    def frames():  # noqa: ANN202
        calls.append(1)
        return iter(moving_frames())

    first = adapted_weights(frames, [video], flowsep_weights, TINY, keep_in=tmp_path / "kept")
    second = adapted_weights(frames, [video], flowsep_weights, TINY, keep_in=tmp_path / "kept")
    assert len(calls) == 1 and second.reused and not first.reused
    assert second.weights == first.weights and second.weights.is_file()
    assert (second.adapted, second.base_psnr, second.best_psnr) == (first.adapted, first.base_psnr, first.best_psnr)
    # Other bytes or other options: a new adaptation.
    adapted_weights(frames, [video], flowsep_weights, AdaptOptions(**{**TINY.__dict__, "seed": 1}), keep_in=tmp_path / "kept")
    assert len(calls) == 2
    assert not list((tmp_path / "kept").glob("*.partial"))


def test_cli_adapts_saves_and_reuses(tmp_path: Path, flowsep_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEPCONV_ADAPT_CACHE", str(tmp_path / "kept"))
    monkeypatch.setattr("sepconv_cli.commands.adapting.AdaptOptions",
                        lambda budget: AdaptOptions(**{**TINY.__dict__, "budget": budget}))
    video = make_video(tmp_path / "in.mp4", width=128, height=96, frames=20, audio=False)
    runner = CliRunner()
    saved = tmp_path / "mine.pt"
    args = ["interpolate", str(video), "--weights", str(flowsep_weights), "--adapt", "1m"]
    first = runner.invoke(cli, [*args, "--out", str(tmp_path / "a.mp4"), "--save-adapted", str(saved)])
    assert first.exit_code == 0, first.output
    assert "held-out triplets" in first.output and saved.is_file()
    assert len(decode_rgb(tmp_path / "a.mp4")) == 40  # 2 × 20, the duration kept
    second = runner.invoke(cli, [*args, "--out", str(tmp_path / "b.mkv"), "--lossless"])
    assert second.exit_code == 0, second.output
    assert "reused the adaptation" in second.output
    # The saved weights are the ones used: interpolating with them gives the same frames.
    third = runner.invoke(cli, ["interpolate", str(video), "--weights", str(saved), "--out", str(tmp_path / "c.mkv"),
                                "--lossless"])
    assert third.exit_code == 0, third.output
    assert all(np.array_equal(x, y) for x, y in zip(decode_rgb(tmp_path / "b.mkv"), decode_rgb(tmp_path / "c.mkv")))


def test_cli_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    runner = CliRunner()
    video = make_video(tmp_path / "in.mp4", width=64, height=48, frames=6, audio=False)
    bad = runner.invoke(cli, ["interpolate", str(video), "--adapt", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    alone = runner.invoke(cli, ["interpolate", str(video), "--save-adapted", str(tmp_path / "w.pt")])
    assert alone.exit_code == 2 and "--save-adapted needs --adapt" in alone.output


def test_a_small_video_adapts_with_smaller_patches(tmp_path: Path, flowsep_weights: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # 128×96 is under the default 160-px patches: the sides come from the frames instead.
    monkeypatch.setenv("SEPCONV_ADAPT_CACHE", str(tmp_path / "kept"))
    monkeypatch.setattr("sepconv_cli.commands.adapting.AdaptOptions",
                        lambda budget: AdaptOptions(**{**FEW_STEPS.__dict__, "budget": budget}))
    video = make_video(tmp_path / "in.mp4", width=128, height=96, frames=20, audio=False)
    result = CliRunner().invoke(cli, ["interpolate", str(video), "--weights", str(flowsep_weights), "--adapt", "1m",
                                      "--out", str(tmp_path / "a.mp4")])
    assert result.exit_code == 0, result.output
    assert "4 steps" in result.output and "held-out triplets" in result.output
    assert "warning" not in result.output
    assert len(decode_rgb(tmp_path / "a.mp4")) == 40


@pytest.mark.parametrize("size, frames, reason", [((48, 40), 12, "too small to adapt to"),
                                                  ((128, 96), 4, "too few frames")])
def test_what_cannot_be_adapted_to_is_interpolated_unadapted_after_one_warning(
        tmp_path: Path, flowsep_weights: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], frames: int,
        reason: str) -> None:
    monkeypatch.setenv("SEPCONV_ADAPT_CACHE", str(tmp_path / "kept"))
    video = make_video(tmp_path / "in.mp4", width=size[0], height=size[1], frames=frames, audio=False)
    saved = tmp_path / "used.pt"
    args = ["interpolate", str(video), "--weights", str(flowsep_weights), "--lossless"]
    result = CliRunner().invoke(cli, [*args, "--adapt", "1m", "--out", str(tmp_path / "a.mkv"), "--save-adapted",
                                      str(saved)])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and reason in warned[0] and "original weights" in warned[0], result.output
    assert "Traceback" not in result.output and "error" not in result.output
    # --save-adapted still writes the weights used: the original ones, so the output is theirs.
    assert saved.read_bytes() == flowsep_weights.read_bytes()
    plain = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b.mkv")])
    assert plain.exit_code == 0, plain.output
    assert all(np.array_equal(x, y) for x, y in zip(decode_rgb(tmp_path / "a.mkv"), decode_rgb(tmp_path / "b.mkv"),
                                                     strict=True))
    assert not (tmp_path / "kept").exists() or not list((tmp_path / "kept").iterdir())


@pytest.mark.parametrize("height, width, stride", [(144, 176, 16), (96, 128, 16), (1080, 1920, 16), (200, 300, 32)])
def test_patch_sides_fit_the_frames_and_the_network(height: int, width: int, stride: int) -> None:
    options = AdaptOptions()
    sides = patch_sides(height, width, options, stride)
    assert MIN_SIDE <= sides.crop <= sides.patch <= min(height, width, options.patch)
    assert sides.crop % stride == 0 and sides.held_out % stride == 0
    assert sides.held_out <= options.val_patch
    # A ×2 copy is used only where it holds a whole patch.
    assert sides.half_train == (min(height, width) // 2 >= sides.patch)
    assert sides.half_held == (min(height, width) // 2 >= MIN_SIDE)
    if sides.half_held:
        assert sides.held_out <= min(height, width) // 2
    if min(height, width) >= 2 * options.patch:
        assert (sides.patch, sides.crop) == (options.patch, options.crop)


def test_frames_under_the_smallest_patch_cannot_be_adapted_to() -> None:
    with pytest.raises(CannotAdapt, match="48×40 are too small"):
        patch_sides(40, 48, AdaptOptions())
    assert patch_sides(MIN_SIDE, MIN_SIDE, AdaptOptions()).patch == MIN_SIDE


@pytest.mark.parametrize("count", [2, 3, 5, 8, 20, 120])
def test_enough_triplets_are_held_out_and_enough_left_to_train(count: int) -> None:
    options = AdaptOptions()
    held = held_out_choice(count, options)
    assert 1 <= len(held) <= max(1, count // 2) and held <= set(range(count))
    assert len(held) >= min(options.held_out_min, count // 2)
    assert len(held) >= count // options.held_out_every
    if len(held) > 1:  # spread over the clip, not bunched at one end
        assert max(held) - min(held) >= count // 2


def test_held_out_windows_include_run_time_motion(tmp_path: Path) -> None:
    # A pan of 4 px per frame: the triplet's outer frames are 8 px apart, its ×2 copy's 4 px,
    # the motion between neighbours that the run interpolates.
    import cv2

    frames = moving_frames(30, size=(192, 256), speed=4.0)
    options = AdaptOptions(triplets=8, val_patches=3, patches=2)
    data = write_window_caches(spread_windows(iter(frames), 8, len(frames)), tmp_path, options)
    assert data.sides.half_held and data.held_out_triplets == 4
    held = PatchCache(data.held_out)
    assert [unit.patches for unit in held.index.units] == [6] * 4  # 3 full-size + 3 halved windows each
    for index, unit_start in enumerate(range(0, len(held), 6)):
        shifts = []
        for k in range(unit_start, unit_start + 6):
            f0, _, f2 = (np.float32(held[k][t].mean(axis=0)) for t in range(3))
            shifts.append(abs(cv2.phaseCorrelate(f0, f2)[0][0]))
        assert np.allclose(shifts[:3], 8, atol=1) and np.allclose(shifts[3:], 4, atol=1), (index, shifts)


def _cached_windows(root: Path) -> Iterator[tuple[int, np.ndarray, int]]:
    """(first frame of the triplet, (5, 3, S, S) window, neighbour flags) of every window of a cache."""
    cache = PatchCache(root)
    for unit in cache.index.units:
        start = int(unit.key.split(":")[1].split("-")[0])
        windows, flags = np.load(root / unit.shard), np.load(root / valid_name(unit.shard))
        for window, flag in zip(windows, flags, strict=True):
            yield start, window, int(flag)


def test_adaptation_caches_hold_the_neighbour_frames_and_none_across_a_shot_cut(tmp_path: Path) -> None:
    import cv2

    from sepconv_cli.adaptation.triplets import _half

    # Two shots of disjoint colours (a cut between frames 14 and 15), each a moving texture.
    cut = 15
    frames = [f // 2 + (128 if k >= cut else 0) for k, f in enumerate(moving_frames(30, size=(192, 256)))]
    options = AdaptOptions(patch=64, crop=64, val_patch=64, patches=2, held_out_every=3, val_patches=2)
    data = write_window_caches(spread_windows(iter(frames), 16, len(frames)), tmp_path, options)
    assert data.sides.half_train and data.sides.half_held  # the ×2 copies are cropped too
    halves = [_half(f) for f in frames]
    seen: dict[int, set[int]] = {}
    for root in (data.train, data.held_out):
        assert PatchCache(root).has_windows and PatchCache(root).index.version == 2
        for start, window, flags in _cached_windows(root):
            seen.setdefault(start, set()).add(flags)
            assert (window < 128).all() or (window >= 128).all(), start  # one shot: no frame across the cut
            # Find the window's place by its middle frame, at full size or in the ×2 copy.
            middle = np.ascontiguousarray(window[2].transpose(1, 2, 0))
            for source in (frames, halves):
                scores = cv2.matchTemplate(source[start + 1], middle, cv2.TM_SQDIFF)
                if scores.min() == 0:
                    break
            assert scores.min() == 0, start
            x, y = cv2.minMaxLoc(scores)[2]
            wanted = [start - 2 if flags & BEFORE else start, start, start + 1, start + 2,
                      start + 4 if flags & AFTER else start + 2]
            for k, index in enumerate(wanted):  # every frame cut at the same place
                assert np.array_equal(window[k], source[index][y : y + 64, x : x + 64].transpose(2, 0, 1)), (start, k)
    # Windows start every third frame; the clip's ends and the cut leave a neighbour out, nothing else does.
    assert sorted(seen) == list(range(0, 28, 3))
    expected = {0: AFTER, 12: BEFORE, 15: AFTER, 27: BEFORE}
    assert seen == {start: {expected.get(start, BOTH)} for start in seen}


@pytest.mark.usefixtures("one_torch_thread")
def test_held_out_scores_give_a_four_frame_model_its_neighbours(tmp_path: Path) -> None:
    import shutil

    from torch.utils.data import DataLoader

    from sepconv_cli.adaptation.held_out import _psnr

    # Accelerating motion, where the quadratic candidate differs from the linear one.
    frames = moving_frames(30, speed=1.0, accel=0.3)
    options = AdaptOptions(patch=64, crop=64, val_patch=64, patches=2, held_out_every=2, val_patches=2)
    data = write_window_caches(spread_windows(iter(frames), 16, len(frames)), tmp_path / "caches", options, 32)
    # The same windows with their neighbours withheld: every flag cleared.
    withheld = tmp_path / "withheld"
    shutil.copytree(data.held_out, withheld)
    for valid in withheld.glob("shards/*.valid.npy"):
        np.save(valid, np.zeros_like(np.load(valid)))
    flags = np.concatenate([np.load(v) for v in sorted(data.held_out.glob("shards/*.valid.npy"))])
    both = flags == BOTH
    assert both.any() and not both.all()  # some windows have both neighbours, the clip's ends do not

    torch.manual_seed(0)
    quadratic = build_model("flowsep", {"channels": [4, 8, 8, 8], "quadratic": True})
    with torch.no_grad():
        quadratic.head.bias[-2:] = 8.0  # α = 1: the taps follow the quadratic motion wholly
    torch.manual_seed(0)
    models = {"quadratic": quadratic, "flowsep": build_model("flowsep", {"channels": [4, 8, 8, 8]}),
              "sepconv": build_model("sepconv", TINY_SEPCONV)}
    for name, network in models.items():
        weights = tmp_path / f"{name}.pt"
        save_weights(network, weights)
        scored = np.concatenate(score_held_out(weights, data.held_out, "cpu", 4))
        without = np.concatenate(score_held_out(weights, withheld, "cpu", 4))
        assert len(scored) == len(flags) and np.isfinite(scored).all()
        if name == "quadratic":
            # Only where both neighbours exist do they change the prediction (elsewhere: linear motion).
            assert np.array_equal(scored[~both], without[~both])
            assert not np.allclose(scored[both], without[both], rtol=1e-3, atol=0), name
        else:  # models that take no neighbours score the windows' triplets alone
            assert np.array_equal(scored, without), name
        # As the training loop validates (the score its best checkpoint is chosen by).
        loaded = load_weights(weights).eval()
        validated = evaluate(loaded, DataLoader(held_out_dataset(PatchCache(data.held_out), loaded), batch_size=4),
                             torch.device("cpu"))
        assert np.mean([_psnr(float(e)) for e in scored]) == pytest.approx(validated["psnr"], abs=1e-3), name


def test_a_four_frame_model_adapts_on_windows(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_model("flowsep", {"channels": [4, 8, 8, 8], "quadratic": True})
    base = tmp_path / "quadratic.pt"
    save_weights(network, base)
    result = adapt(moving_frames(speed=1.0, accel=0.3), base, tmp_path / "work", TINY)
    assert result.steps == TINY.steps and result.held_out_triplets >= 1
    for cache in ("train", "held_out"):
        assert PatchCache(tmp_path / "work" / cache).has_windows
    assert load_weights(result.weights).config.quadratic


def test_the_held_out_choice_needs_a_gain_beyond_noise() -> None:
    rng = np.random.default_rng(0)
    base = [np.full(4, 1e-3) * rng.uniform(0.5, 2) for _ in range(10)]

    def scaled(gains_db: list[float]) -> list[np.ndarray]:
        return [e / 10 ** (g / 10) for e, g in zip(base, gains_db)]

    steady = compare_held_out(base, scaled([0.2] * 10), 0.05)
    assert steady.better and steady.gain == pytest.approx(0.2) and steady.margin == pytest.approx(0.05)
    assert not compare_held_out(base, scaled([0.03] * 10), 0.05).better  # under min_gain however steady
    # The same mean gain, carried by two triplets while the others lose: noise, not a gain.
    noisy = compare_held_out(base, scaled([1.5, 1.5] + [-0.125] * 8), 0.05)
    assert noisy.gain == pytest.approx(0.2) and noisy.margin > noisy.gain and not noisy.better
    # Pooled per triplet: a window that was already exact (a still corner) does not swamp the rest.
    still = [np.append(e, 0.0) for e in base]
    assert compare_held_out(still, [np.append(e, 1e-6) for e in scaled([0.2] * 10)], 0.05).better


def test_held_out_gains_are_told_apart_by_scale() -> None:
    # Each triplet's windows: two at full size (twice the run's motion), then two ×2 smaller.
    base = [np.array([1e-3, 2e-3, 1e-3, 3e-3]) * k for k in (1, 2, 3)]
    candidate = [e * np.array([10 ** -0.05, 10 ** -0.05, 1, 1]) for e in base]  # +0.5 dB at full size only
    full, half = scale_gains(base, candidate, 2)
    assert full == pytest.approx(0.5) and half == pytest.approx(0.0, abs=1e-9)
    assert scale_gains(base, candidate, 1)[0] == pytest.approx(compare_held_out(base, candidate, 0.05).gain)


def test_the_recipe_reaches_the_training_loop(tmp_path: Path, flowsep_weights: Path) -> None:
    import json

    defaults = AdaptOptions()
    assert (defaults.optimizer, defaults.lr, defaults.warmup_steps, defaults.clip_grad) == ("adam", 2e-4, 100, 0.05)
    options = AdaptOptions(**{**FEW_STEPS.__dict__, "optimizer": "adamax", "lr": 1e-4, "warmup_steps": 3,
                              "clip_grad": 0.02, "ema": 0.9, "losses": ("l1", "ssim:0.5")})
    adapt(moving_frames(), flowsep_weights, tmp_path / "work", options)
    config = json.loads((tmp_path / "work" / "run" / "config.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["warmup_steps"], config["clip_grad"]) == ("adamax", 1e-4, 3, 0.02)
    assert (config["ema"], config["losses"]) == (0.9, ["l1", "ssim:0.5"])
    assert (config["crop"], config["validate_init"]) == (96, False)  # 128×96 frames: 96-px patches
    with pytest.raises(InputError, match="unknown optimizer"):
        AdaptOptions(optimizer="sgd")
    with pytest.raises(InputError, match="decay"):
        AdaptOptions(ema=1.0)
    # The recipe decides the weights: a kept adaptation made with another one is not reused.
    video = tmp_path / "clip.mkv"
    video.write_bytes(b"stand-in")
    assert adaptation_key([video], flowsep_weights, options) != adaptation_key([video], flowsep_weights, FEW_STEPS)


def test_ctrl_c_while_adapting_exits_130_and_leaves_nothing(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "in.mp4", width=192, height=160, frames=40, audio=False)
    temp, kept, out = tmp_path / "tmp", tmp_path / "kept", tmp_path / "out.mp4"
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sepconv_cli", "interpolate", str(video), "--out", str(out), "--adapt", "10m",
         "--weights", str(flowsep_weights)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TMPDIR": str(temp),
             "SEPCONV_ADAPT_CACHE": str(kept)},
    )
    # Training has begun once the run folder holds its metrics.
    code, stderr = interrupt_when(proc, lambda: any(temp.glob("sepconv-adapt-*/run/metrics*")))
    assert code == 130
    assert interrupted_cleanly(stderr)
    assert not out.exists() and not list(tmp_path.glob("*.partial*"))
    # Only torch's own compile cache, made once an optimizer has stepped (torch._dynamo's import), may stay.
    assert not [p for p in temp.iterdir() if not p.name.startswith("torchinductor_")]
    assert not kept.exists() or not list(kept.iterdir())


def _clip_dataset(frames: list[np.ndarray], truth: Callable[[int], np.ndarray]) -> Dataset:
    """The ``video`` protocol on ``frames``: predict every odd frame from its even neighbours."""
    def read() -> Iterator[Triplet]:
        for k in range(0, len(frames) - 2, 2):
            yield Triplet("clip", str(k + 1), frames[k], frames[k + 2], truth(k + 1))

    return Dataset("video", (), (Sample("clip", (len(frames) - 1) // 2, read),))


def test_eval_adapts_on_the_given_frames_only(flowsep_weights: Path, tmp_path: Path) -> None:
    frames = moving_frames(25)
    noise = np.random.default_rng(1).integers(0, 256, frames[0].shape).astype(np.uint8)
    honest = _clip_dataset(frames, lambda k: frames[k])
    scrambled = _clip_dataset(frames, lambda k: noise)
    assert all(np.array_equal(a, b) for a, b in zip(input_frames(honest.samples[0]), frames[0::2], strict=True))

    digests, scores = [], []
    for dataset in (honest, scrambled):
        base = build_methods(["flowsep"], weights=[flowsep_weights])
        kept = tmp_path / f"kept{len(digests)}"
        adapted = adapted_methods(base, TINY, keep_in=kept)
        result = run_evaluation(dataset, [*base, *adapted])
        digests.append(parameter_digest(adapted[0].interpolator.model))
        assert parameter_digest(load_weights(kept / "clip.flowsep+adapt.pt")) == digests[-1]
        scores.append([s.psnr for s in result.overall() if s.method == "flowsep+adapt"][0])
        assert "clip" in adapted[0].results
        outcome = adapted[0].results["clip"]
        # What it tried and turned down is kept beside what it used, to be scored at run time too.
        tried = kept / "clip.flowsep+adapt.tried.pt"
        assert tried.exists() == (not outcome.adapted and outcome.tried is not None)
        assert outcome.tried is None or outcome.tried.exists()
    # The ground truth changed completely, the adapted weights not at all; the scores did.
    assert digests[0] == digests[1]
    assert scores[0] > scores[1] + 10
