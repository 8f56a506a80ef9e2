"""Training a model that takes any time t: scenes at random t, codec artefacts, mixed data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.data.codec import h264_roundtrip
from sepconv_cli.data.dataset import MixedDataset, SceneDataset, TripletDataset, augment_timed
from sepconv_cli.data.cache import PatchCache
from sepconv_cli.data.synthetic import SceneConfig, SceneRenderer, scene_time
from sepconv_cli.models.registry import load_weights
from tests.test_train import make_cache, texture


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for k in range(3):
        cv2.imwrite(str(folder / f"p{k}.png"), texture(rng, 128))
    return folder


def test_temporal_swap_turns_t_into_one_minus_t() -> None:
    triplet = np.arange(3 * 3 * 8 * 8, dtype=np.uint8).reshape(3, 3, 8, 8)
    swaps = 0
    for seed in range(40):
        out, swapped = augment_timed(triplet, np.random.default_rng(seed), 8)
        frame0 = out[0]
        # Whatever flip or rotation was drawn, frame 0 is the old frame 2 exactly when swapped.
        assert swapped == (np.sort(frame0, axis=None) == np.sort(triplet[2], axis=None)).all()
        swaps += swapped
    assert 10 < swaps < 30


def test_timed_scenes_report_their_time_and_render_the_frame_there(photos: Path) -> None:
    config = SceneConfig(size=64, max_motion=20, max_layers=1, effects=False, random_time=True, static_fraction=0)
    times = [scene_time(3, i, config) for i in range(200)]
    assert 0.3 < np.mean(np.isclose(times, 0.5)) < 0.5  # 40 % at the midpoint
    assert min(times) >= 0.05 and max(times) <= 0.95
    renderer = SceneRenderer(photos, config, device="cpu")
    index = next(i for i in range(200) if abs(scene_time(3, i, config) - 0.5) > 0.2)
    scenes = renderer.render([index], seed=3)
    t = float(scenes.times[0])
    assert t == pytest.approx(scene_time(3, index, config))
    # The middle frame is where the motion model puts it at t, not at 0.5: closer to the
    # input frame on t's side (in mean absolute difference).
    frames = scenes.frames[0]
    near, far = (0, 2) if t < 0.5 else (2, 0)
    assert (frames[1] - frames[near]).abs().mean() < (frames[1] - frames[far]).abs().mean()
    # Off, nothing changes: the same scene renders the same pixels at t = 0.5.
    plain = SceneRenderer(photos, SceneConfig(size=64, max_motion=20, max_layers=1, effects=False,
                                              static_fraction=0), device="cpu").render([index], seed=3)
    assert plain.times is not None and float(plain.times[0]) == 0.5


def test_clean_target_keeps_noise_off_the_middle_frame(photos: Path) -> None:
    base = dict(size=48, max_motion=0, max_layers=1, static_fraction=1.0, p_brightness=0, p_blur=0, p_jpeg=0,
                p_noise=1.0)
    noisy = SceneRenderer(photos, SceneConfig(**base), device="cpu").render([0]).frames[0]
    clean = SceneRenderer(photos, SceneConfig(**base, clean_target=True), device="cpu").render([0]).frames[0]
    assert torch.equal(noisy[0], clean[0]) and torch.equal(noisy[2], clean[2])
    # A static scene: the clean middle frame is the noiseless image, the noisy one is not.
    assert (clean[1] - noisy[1]).abs().mean() > 0.002


def test_h264_round_trip_keeps_the_picture_and_adds_codec_loss() -> None:
    frames = np.stack([texture(np.random.default_rng(k), 64).transpose(2, 0, 1) for k in range(2)])
    light = h264_roundtrip(frames, crf=10)
    heavy = h264_roundtrip(frames, crf=45)
    assert light.shape == frames.shape and light.dtype == np.uint8
    error = lambda x: np.abs(x.astype(int) - frames).mean()  # noqa: E731
    assert 0 < error(light) < error(heavy) < 20
    with pytest.raises(ValueError, match="even"):
        h264_roundtrip(frames[..., :63], crf=20)


def test_scene_dataset_gives_times_and_mixes_with_footage(photos: Path, tmp_path: Path) -> None:
    config = SceneConfig(size=48, max_motion=10, random_time=True, clean_target=True)
    scenes = SceneDataset(photos, 6, crop=32, config=config, timed=True, h264=1.0)
    triplet, t = scenes[0]
    assert triplet.shape == (3, 3, 32, 32) and triplet.dtype == torch.uint8 and 0 < float(t) < 1
    footage = TripletDataset(PatchCache(make_cache(tmp_path / "cache", units=1, per_unit=2)), crop=32, timed=True)
    mixed = MixedDataset([scenes, footage])
    assert len(mixed) == 12
    assert torch.equal(mixed[1][0], footage[0][0]) and float(mixed[1][1]) in (0.5,)
    assert torch.equal(mixed[3][0], footage[1][0]) and torch.equal(mixed[5][0], footage[0][0])
    # A longer footage set is walked through across epochs, not cut to its first items.
    long_footage = TripletDataset(PatchCache(make_cache(tmp_path / "long", units=2, per_unit=10)), crop=32,
                                  augmented=False)
    items = [long_footage[j] for j in range(20)]
    mixed = MixedDataset([scenes, long_footage])
    seen = set()
    for epoch in range(4):  # 6 footage items an epoch
        mixed.set_epoch(epoch)
        for i in range(1, len(mixed), 2):
            seen.add(next(j for j, item in enumerate(items) if torch.equal(mixed[i], item)))
    assert seen == set(range(20))


def test_train_flowsep_on_scenes_mixed_with_footage(photos: Path, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "cache", units=2, per_unit=4, size=64)
    held_out = make_cache(tmp_path / "held", units=1, per_unit=3, size=64, seed=1)
    args = ["train", "--model", "flowsep", "--model-config", json.dumps({"channels": [4, 8, 8, 8]}),
            "--synthetic", str(photos), "--data", str(cache), "--val-data", str(held_out), "--scene-size", "64",
            "--crop", "32", "--max-motion", "12", "--h264", "0.5", "--batch-size", "4", "--scenes-per-epoch", "4",
            "--max-steps", "3", "--workers", "0", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "mixed with patch cache" in config["data"] and "validated on patch cache" in config["data"]
    assert config["train_triplets"] == 8 and config["val_triplets"] == 3
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "val" for r in rows)
    model = load_weights(tmp_path / "run" / "weights.pt", model="flowsep")
    assert model.any_time


@pytest.mark.parametrize("clean_target", [True, False])
def test_h264_reaches_the_target_only_when_it_is_not_kept_clean(photos: Path, clean_target: bool) -> None:
    config = SceneConfig(size=48, max_motion=10, effects=False, clean_target=clean_target)
    scenes = SceneDataset(photos, 2, crop=48, augmented=False, fixed=True, config=config, h264=1.0, seed=5)
    rendered = torch.from_numpy(scenes.renderer.render([0], seed=5).to_uint8()[0])
    triplet = scenes[0]
    assert not torch.equal(triplet[0], rendered[0]) and not torch.equal(triplet[2], rendered[2])
    assert torch.equal(triplet[1], rendered[1]) == clean_target


def test_elastic_scenes_deform_nonlinearly_and_leave_others_alone(photos: Path) -> None:
    base = dict(size=64, max_motion=0, max_layers=1, effects=False, static_fraction=1.0)
    still = SceneRenderer(photos, SceneConfig(**base), device="cpu").render(range(4), seed=2).frames
    bent = SceneRenderer(photos, SceneConfig(**base, p_elastic=1.0), device="cpu").render(range(4), seed=2).frames
    # t = 0 is the undeformed picture; later frames move although the scene is "static".
    assert torch.allclose(still[:, 0], bent[:, 0], atol=1e-6)
    assert (bent[:, 2] - bent[:, 0]).abs().mean() > 0.01
    assert torch.allclose(still[:, 2], still[:, 0], atol=1e-6)
    none = SceneRenderer(photos, SceneConfig(**base, p_elastic=1e-9), device="cpu").render(range(4), seed=2).frames
    assert torch.equal(none, still)
