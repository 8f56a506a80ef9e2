"""Five-frame windows [before, frame0, middle, frame1, after]: cache version 2, prepare, scenes, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.data.cache import AFTER, BEFORE, BOTH, PatchCache, read_index
from sepconv_cli.data.dataset import (
    MixedDataset,
    SceneDataset,
    TripletDataset,
    augment,
    augment_timed,
    to_frames,
    to_window_frames,
)
from sepconv_cli.data.prepare import SelectionParams, prepare_frames, prepare_synthetic
from sepconv_cli.data.synthetic import PhotoBank, SceneConfig, SceneRenderer
from sepconv_cli.errors import InputError, OutputError
from tests.test_prepare import pan, tree_bytes, write_sequence
from tests.test_synthetic import photo

S = 32
PARAMS = SelectionParams(size=S, patches=3, triplets_per_unit=2)
BLUE = 72  # frame k has blue = BLUE + k: one histogram bin (72..79), so no cut, for k < 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numbered_pan(frames: int) -> list[np.ndarray]:
    """The test pan, its blue channel replaced by the frame's number (BLUE + k)."""
    out = []
    for k, rgb in enumerate(pan(frames)):
        rgb = rgb.copy()
        rgb[..., 2] = BLUE + k
        out.append(rgb)
    return out


def source_of(window: np.ndarray) -> list[int]:
    """Frame numbers of a window's five frames, read from their blue channel."""
    blue = window[:, 2].reshape(5, -1)
    assert (blue == blue[:, :1]).all()
    return [int(v) - BLUE for v in blue[:, 0]]


def expected_window(start: int, stride: int, frames: int) -> tuple[list[int], int]:
    before, after = start - stride, start + 3 * stride
    flags = (BEFORE if before >= 0 else 0) | (AFTER if after < frames else 0)
    mid = [start, start + stride, start + 2 * stride]
    return [before if flags & BEFORE else start, *mid, after if flags & AFTER else mid[-1]], flags


@pytest.mark.parametrize("stride", [1, 2])
def test_prepare_windows_hold_the_neighbour_frames_at_the_same_window(tmp_path: Path, stride: int) -> None:
    frames = numbered_pan(8)
    write_sequence(tmp_path / "seqs" / "pan", frames, ".png")  # lossless: every value is exact
    summary = prepare_frames(tmp_path / "seqs", tmp_path / "cache", SelectionParams(**{**PARAMS.__dict__, "stride": stride}))
    cache = PatchCache(tmp_path / "cache")
    assert cache.has_windows and cache.version == 2 and read_index(tmp_path / "cache").version == 2
    assert len(cache) == summary.counts["patches"] > 4
    starts = set()
    invalid = 0
    for i in range(len(cache)):
        window, valid = cache.window(i)
        assert window.shape == (5, 3, S, S) and window.dtype == np.uint8
        assert np.array_equal(cache[i], window[1:4])  # the triplet, as version 1 has it
        got = source_of(window)
        want, flags = expected_window(got[1], stride, len(frames))
        assert got == want and valid == (flags == BOTH)
        invalid += not valid
        starts.add(got[1])
        # Every frame is the crop of its source frame at one and the same window.
        rgb = window.transpose(0, 2, 3, 1)
        x, y = cv2.minMaxLoc(cv2.matchTemplate(frames[got[1]], np.ascontiguousarray(rgb[1]), cv2.TM_SQDIFF))[2]
        for k, f in zip(got, rgb):
            assert np.array_equal(frames[k][y : y + S, x : x + S], f)
    assert len(starts) >= 3 and invalid == summary.counts["patches_without_neighbours"] > 0
    flags = np.load(tmp_path / "cache" / "shards" / "000000.valid.npy")
    assert flags.dtype == np.uint8 and (flags & AFTER).all() and not (flags & BEFORE).all()


def test_neighbours_across_a_shot_cut_are_flagged(tmp_path: Path) -> None:
    from tests.media import make_video

    video = make_video(tmp_path / "clip.mp4", width=96, height=64, frames=12, cut_at=6, audio=False)
    params = SelectionParams(**{**PARAMS.__dict__, "triplets_per_unit": 1})  # one triplet per unit: keys say which
    summary = prepare_frames(video, tmp_path / "cache", params)
    cache = PatchCache(tmp_path / "cache")
    index = read_index(tmp_path / "cache")
    # Triplets 0..3 and 6..9 are whole shots; 3's after (6) and 6's before (5) are across the cut.
    want = {0: AFTER, 1: BOTH, 2: BOTH, 3: BEFORE, 6: AFTER, 7: BOTH, 8: BOTH, 9: BEFORE}
    row = 0
    seen = set()
    for unit in index.units:
        start = int(unit.key.split(":")[1].split("-")[0])
        if unit.patches:
            flags = np.load(tmp_path / "cache" / (unit.shard[: -len(".npy")] + ".valid.npy"))
            assert (flags == want[start]).all(), (start, flags)
            for k in range(unit.patches):
                window, valid = cache.window(row + k)
                assert valid == (want[start] == BOTH)
                # A missing neighbour is a copy of the adjacent input frame; a real one differs from it.
                assert np.array_equal(window[0], window[1]) == (not want[start] & BEFORE)
                assert np.array_equal(window[4], window[3]) == (not want[start] & AFTER)
            seen.add(start)
        row += unit.patches
    assert {3, 6} <= seen and summary.counts["cuts"] == 2
    assert summary.counts["neighbour_cuts"] == 2


def test_resume_is_byte_identical_and_video_matches_its_frames(tmp_path: Path) -> None:
    from tests.media import make_video
    from sepconv_cli.video import iter_frames

    (tmp_path / "videos").mkdir()
    video = make_video(tmp_path / "videos" / "clip.mp4", width=96, height=64, frames=11, audio=False)
    params = SelectionParams(**{**PARAMS.__dict__, "stride": 2})
    prepare_frames(video, tmp_path / "whole", params)

    def stop(done: int, total: int | None) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_frames(video, tmp_path / "resumed", params, progress=stop)
    assert len(read_index(tmp_path / "resumed").units) == 2
    prepare_frames(video, tmp_path / "resumed", params)
    assert tree_bytes(tmp_path / "resumed") == tree_bytes(tmp_path / "whole")
    # The same frames as an image sequence give the same windows: the video's units keep
    # their neighbour frames across unit boundaries as the image planner does.
    write_sequence(tmp_path / "seqs" / "clip", [f.rgb for f in iter_frames(video)], ".png")
    prepare_frames(tmp_path / "seqs", tmp_path / "images", params)
    video_shards = {k: v for k, v in tree_bytes(tmp_path / "whole").items() if k.startswith("shards/")}
    image_shards = {k: v for k, v in tree_bytes(tmp_path / "images").items() if k.startswith("shards/")}
    assert video_shards and video_shards == image_shards
    units = [u.key for u in read_index(tmp_path / "whole").units]
    assert units == ["clip:0-1", "clip:2-3", "clip:4-5", "clip:6-6"]


def test_version_1_caches_resume_only_as_version_1(tmp_path: Path) -> None:
    from sepconv_cli.cli import cli

    write_sequence(tmp_path / "seqs" / "pan", pan(7))
    triplets = SelectionParams(**{**PARAMS.__dict__, "windows": False})
    prepare_frames(tmp_path / "seqs", tmp_path / "whole", triplets)

    def stop(done: int, total: int | None) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_frames(tmp_path / "seqs", tmp_path / "v1", triplets, progress=stop)
    with pytest.raises(OutputError, match="holds a version-1 cache of triplets.*add --triplets"):
        prepare_frames(tmp_path / "seqs", tmp_path / "v1", PARAMS)
    runner = CliRunner()
    args = ["prepare", str(tmp_path / "seqs"), "--out", str(tmp_path / "v1"), "--size", str(S), "--patches", "3",
            "--workers", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == OutputError.exit_code and len(result.output.strip().splitlines()) == 1
    assert "version-1" in result.output and "Traceback" not in result.output
    # Finishing it as version 1 gives what an uninterrupted version-1 run writes.
    prepare_frames(tmp_path / "seqs", tmp_path / "v1", triplets)
    assert tree_bytes(tmp_path / "v1") == tree_bytes(tmp_path / "whole")
    assert not PatchCache(tmp_path / "v1").has_windows
    with pytest.raises(OutputError, match="version-1"):
        prepare_frames(tmp_path / "seqs", tmp_path / "v1", PARAMS)  # even when complete: no silent v1
    prepare_frames(tmp_path / "seqs", tmp_path / "v2", PARAMS)
    with pytest.raises(OutputError, match="version-2 cache of five-frame windows.*leave out --triplets"):
        prepare_frames(tmp_path / "seqs", tmp_path / "v2", triplets)
    # The two versions keep the same patches: a window's middle three are the triplet.
    v1, v2 = PatchCache(tmp_path / "v1"), PatchCache(tmp_path / "v2")
    assert len(v1) == len(v2) and all(np.array_equal(v1[i], v2[i]) for i in range(len(v1)))
    assert all(np.array_equal(v2.window(i)[0][1:4], v1[i]) for i in range(len(v1)))


def test_cli_writes_windows_and_triplets_on_request(tmp_path: Path) -> None:
    from sepconv_cli.cli import cli

    write_sequence(tmp_path / "seqs" / "pan", pan(6))
    runner = CliRunner()
    base = ["prepare", str(tmp_path / "seqs"), "--size", str(S), "--patches", "3", "--workers", "1"]
    result = runner.invoke(cli, [*base, "--out", str(tmp_path / "v2")])
    assert result.exit_code == 0, result.output
    assert "neighbour frames:" in result.output and PatchCache(tmp_path / "v2").has_windows
    result = runner.invoke(cli, [*base, "--out", str(tmp_path / "v1"), "--triplets"])
    assert result.exit_code == 0, result.output
    assert "neighbour frames:" not in result.output and not PatchCache(tmp_path / "v1").has_windows


def test_damaged_window_caches_are_one_line_errors(tmp_path: Path) -> None:
    write_sequence(tmp_path / "seqs" / "pan", pan(6))
    prepare_frames(tmp_path / "seqs", tmp_path / "cache", PARAMS)
    flags = tmp_path / "cache" / "shards" / "000000.valid.npy"
    good = flags.read_bytes()
    np.save(flags, np.zeros(1, np.uint8))
    with pytest.raises(InputError, match=r"000000.valid.npy has shape \(1,\)"):
        PatchCache(tmp_path / "cache").window(0)
    flags.write_bytes(good)
    assert PatchCache(tmp_path / "cache").window(0)[0].shape == (5, 3, S, S)
    flags.unlink()
    with pytest.raises(InputError, match="missing shards/000000.valid.npy"):
        PatchCache(tmp_path / "cache")


# --------------------------------------------------------------------------------------
# Datasets


@pytest.fixture
def caches(tmp_path: Path) -> tuple[PatchCache, PatchCache]:
    """The same patches as a version-1 and a version-2 cache (40 px, for 32 px crops)."""
    write_sequence(tmp_path / "seqs" / "pan", numbered_pan(8), ".png")
    kw = {**PARAMS.__dict__, "size": 40}
    prepare_frames(tmp_path / "seqs", tmp_path / "v1", SelectionParams(**{**kw, "windows": False}))
    prepare_frames(tmp_path / "seqs", tmp_path / "v2", SelectionParams(**kw))
    return PatchCache(tmp_path / "v1"), PatchCache(tmp_path / "v2")


def test_window_items_share_the_triplet_items_crop_and_transform(caches: tuple[PatchCache, PatchCache]) -> None:
    v1, v2 = caches
    plain = TripletDataset(v2, crop=32, seed=4)
    windows = TripletDataset(v2, crop=32, seed=4, windows=True)
    old = TripletDataset(v1, crop=32, seed=4)
    swapped_seen = valid_seen = 0
    for epoch in range(3):
        for d in (plain, windows, old):
            d.set_epoch(epoch)
        for i in range(len(v2)):
            frames, t, valid = windows[i]
            assert frames.shape == (5, 3, 32, 32) and frames.dtype == torch.uint8
            assert t.dtype == valid.dtype == torch.float32 and t.ndim == valid.ndim == 0 and float(t) == 0.5
            assert torch.equal(frames[1:4], plain[i]) and torch.equal(plain[i], old[i])
            assert float(valid) == float(v2.window(i)[1])
            rng = np.random.default_rng([4, epoch, i])
            window = v2.window(i)[0]
            expected, swapped = augment_timed(window, rng, 32)
            assert np.array_equal(frames.numpy(), expected)
            # The swap reverses all five frames: before and after trade places too.
            numbers = source_of(np.ascontiguousarray(frames.numpy()))
            assert numbers == (source_of(window)[::-1] if swapped else source_of(window))
            swapped_seen += swapped
            valid_seen += float(valid) == 1.0
    assert 0 < swapped_seen < 3 * len(v2) and valid_seen > 0


def test_version_1_windows_are_copies_and_invalid(caches: tuple[PatchCache, PatchCache]) -> None:
    v1, _ = caches
    assert not v1.has_windows
    window, valid = v1.window(0)
    assert not valid and np.array_equal(window[1:4], v1[0])
    assert np.array_equal(window[0], window[1]) and np.array_equal(window[4], window[3])
    data = TripletDataset(v1, crop=32, seed=1, windows=True)
    plain = TripletDataset(v1, crop=32, seed=1)
    for i in range(len(v1)):
        frames, t, valid = data[i]
        assert float(valid) == 0.0 and torch.equal(frames[1:4], plain[i])
        assert torch.equal(frames[0], frames[1]) and torch.equal(frames[4], frames[3])
        assert torch.equal(plain[i], torch.from_numpy(augment(np.asarray(v1[i]), np.random.default_rng([1, 0, i]), 32)))
    centre = TripletDataset(v1, crop=32, augmented=False, windows=True)[0][0]
    assert torch.equal(centre[1:4], torch.from_numpy(np.array(v1[0]))[..., 4:36, 4:36])


def test_to_window_frames(caches: tuple[PatchCache, PatchCache]) -> None:
    _, v2 = caches
    data = TripletDataset(v2, crop=32, windows=True)
    batch = torch.stack([data[i][0] for i in range(4)])
    five = to_window_frames(batch)
    assert len(five) == 5 and all(f.shape == (4, 3, 32, 32) and f.dtype == torch.float32 for f in five)
    triplet = to_frames(batch[:, 1:4].contiguous())
    assert all(torch.equal(a, b) for a, b in zip(five[1:4], triplet))
    assert torch.allclose(five[0] * 255, batch[:, 0].float())
    assert five[0].is_contiguous(memory_format=torch.channels_last) is False
    assert to_window_frames(batch, channels_last=True)[2].is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="5, 3, S, S"):
        to_window_frames(batch[:, :3])


def test_a_version_1_and_a_version_2_cache_train(caches: tuple[PatchCache, PatchCache], tmp_path: Path) -> None:
    from sepconv_cli.training import TrainConfig, train
    from tests.conftest import TINY_SEPCONV

    for cache in caches:
        config = TrainConfig(model="sepconv", model_config=dict(TINY_SEPCONV), data=str(cache.root), crop=32,
                             batch_size=2, workers=0, epochs=None, max_steps=2, log_every=1, val_fraction=0.0,
                             samples=1)
        run = tmp_path / f"run-v{cache.version}"
        train(config, run)
        assert (run / "weights.pt").is_file()


def test_scene_and_mixed_datasets_with_windows(caches: tuple[PatchCache, PatchCache]) -> None:
    _, v2 = caches
    bank = PhotoBank.from_arrays([photo(k) for k in range(3)], side=96)
    config = SceneConfig(size=40, max_motion=10.0, random_time=True)
    plain = SceneDataset(bank, 6, crop=32, seed=2, config=config, timed=True)
    windows = SceneDataset(bank, 6, crop=32, seed=2, config=config, windows=True)
    times = set()
    for i in range(6):
        (triplet, t0), (frames, t, valid) = plain[i], windows[i]
        assert frames.shape == (5, 3, 32, 32) and torch.equal(frames[1:4], triplet)
        assert float(t) == float(t0) and float(valid) == 1.0
        times.add(round(float(t), 4))
    assert len(times) > 1
    mixed = MixedDataset([windows, TripletDataset(v2, crop=32, windows=True)], windows=True)
    assert [len(item) for item in (mixed[0], mixed[1])] == [3, 3]
    assert mixed[1][0].shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="windows"):
        MixedDataset([windows, TripletDataset(v2, crop=32)], windows=True)
    with pytest.raises(ValueError, match="windows"):
        MixedDataset([windows, plain])


def test_temporal_swap_reverses_a_window_and_its_time() -> None:
    window = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((5, 3, 4, 4), np.uint8)
    outcomes = set()
    for i in range(40):
        out, swapped = augment_timed(window, np.random.default_rng([0, 0, i]), 4)
        order = tuple(int(v) for v in out[:, 0, 0, 0])
        assert order == ((4, 3, 2, 1, 0) if swapped else (0, 1, 2, 3, 4))
        outcomes.add(swapped)
    assert outcomes == {True, False}


# --------------------------------------------------------------------------------------
# Procedural scenes at t = -1, 0, t, 1, 2


@pytest.fixture
def bank() -> PhotoBank:
    return PhotoBank.from_arrays([photo(k) for k in range(4)], side=128)


def test_three_frame_render_is_frames_1_to_3_of_the_window(bank: PhotoBank) -> None:
    config = SceneConfig(size=48, max_motion=12.0, random_time=True, clean_target=True, p_elastic=0.5)
    renderer = SceneRenderer(bank, config, device="cpu")
    three = renderer.render(range(10), seed=5)
    five = renderer.render(range(10), seed=5, windows=True)
    assert five.frames.shape == (10, 5, 3, 48, 48) and five.windows and not three.windows
    assert torch.equal(five.frames[:, 1:4], three.frames)
    assert torch.equal(five.flow, three.flow) and torch.equal(five.times, three.times)
    # The neighbours are new frames, not copies.
    assert (five.frames[:, 0] - five.frames[:, 1]).abs().mean() > 0.01
    assert (five.frames[:, 4] - five.frames[:, 3]).abs().mean() > 0.01


def test_static_scene_windows_are_five_equal_frames(bank: PhotoBank) -> None:
    still = SceneRenderer(bank, SceneConfig(size=48, max_motion=0.0, effects=False), device="cpu")
    frames = still.render(range(4), windows=True).frames
    assert all(torch.equal(frames[:, k], frames[:, 2]) for k in range(5))
    # Oscillating deformation alone: zero at t = 0 only, so the neighbours move too.
    wobbly = SceneRenderer(bank, SceneConfig(size=48, max_motion=0.0, effects=False, p_elastic=1.0), device="cpu")
    frames = wobbly.render(range(4), windows=True).frames
    assert torch.equal(frames[:, 1:4], wobbly.render(range(4)).frames)
    for k in (0, 4):
        assert ((frames[:, k] - frames[:, 1]).abs().flatten(1).mean(1) > 1e-3).all()


def _pivot_path(scene: object, layer: int) -> dict[float, np.ndarray]:
    """Canvas position of a layer's pivot at each rendered time (slots: 0, t, 1, -1, 2)."""
    out = {}
    for slot, t in enumerate(scene.times):
        p = np.linalg.inv(scene.to_local[layer, slot]) @ np.array([0.0, 0.0, 1.0])
        out[t] = p[:2] / p[2]
    return out


def test_neighbour_times_continue_the_motion(bank: PhotoBank) -> None:
    """T(t) = d t + 4 b t (1 - t) and linear rotation hold at -1 and 2: the acceleration
    is the same on both sides of the pair, the turn at 2 is twice the turn at 1."""
    renderer = SceneRenderer(bank, SceneConfig(size=64, static_fraction=0.0, effects=False), device="cpu")
    accelerating = turning = layers = unsteady = 0
    for index in range(60):
        scene = renderer.scene_parameters(index, seed=1, windows=True)
        assert scene.times == (0.0, 0.5, 1.0, -1.0, 2.0)
        if not scene.steady:  # a layer collapsing to a point: its neighbours are flagged, not used
            unsteady += 1
            continue
        for layer in np.flatnonzero(scene.photo >= 0):
            p = _pivot_path(scene, layer)
            early = p[1.0] - 2 * p[0.0] + p[-1.0]
            late = p[2.0] - 2 * p[1.0] + p[0.0]
            assert np.allclose(early, late, atol=1e-6)
            assert np.allclose(p[0.5] - (p[0.0] + p[1.0]) / 2, -early / 8, atol=1e-6)
            if layer == 0:
                continue
            layers += 1
            accelerating += np.hypot(*early) > 0.5
            angle = {t: np.arctan2(m[1, 0], m[0, 0]) for t, m in
                     ((t, np.linalg.inv(scene.to_local[layer, s])) for s, t in enumerate(scene.times))}
            wrapped = lambda a: np.angle(np.exp(1j * a))  # noqa: E731 - fast turns pass +-pi
            assert abs(wrapped(angle[2.0] - 2 * angle[1.0])) < 1e-9 and abs(wrapped(angle[-1.0] + angle[1.0])) < 1e-9
            turning += abs(np.degrees(angle[1.0])) > 0.5
    assert 0.25 < accelerating / layers < 0.75 and turning / layers > 0.5, (accelerating, turning, layers)
    assert unsteady < 12


def test_neighbour_frames_follow_the_camera(bank: PhotoBank) -> None:
    """Warping frame t = 1 by the background's motion from 1 to 2 gives frame 2 (and 0 to
    -1 gives -1), away from the foreground layer."""
    import torch.nn.functional as F

    size = 64
    config = SceneConfig(size=size, max_layers=1, static_fraction=0.0, effects=False)
    renderer = SceneRenderer(bank, config, device="cpu")
    rendered = renderer.render(range(6), seed=2, windows=True)
    frames = rendered.frames
    half = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) - half
    pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)])

    def background(slot: int, points: np.ndarray, scene: object) -> np.ndarray:
        # Outside the foreground blob (radius at most ~1.52 R) with a few pixels to spare.
        local = scene.to_local[1, slot] @ points
        return np.hypot(local[0] / local[2], local[1] / local[2]) > 1.6 * scene.shape[1, 0] + 3

    moved = 0
    for b in range(6):
        scene = renderer.scene_parameters(b, seed=2, windows=True)
        assert bool(rendered.valid[b]) == scene.steady
        for source, target, frame_source, frame_target in ((2, 4, 3, 4), (0, 3, 1, 0)):
            H = np.linalg.inv(scene.to_photo[0, source]) @ scene.to_photo[0, target]
            q = H @ pixels
            qx, qy = q[0] / q[2] + half, q[1] / q[2] + half
            grid = torch.tensor(np.stack([qx, qy], -1).reshape(1, size, size, 2) / (size - 1) * 2 - 1,
                                dtype=torch.float32)
            warped = F.grid_sample(frames[b : b + 1, frame_source], grid, align_corners=True)[0]
            keep = (qx > 1) & (qx < size - 2) & (qy > 1) & (qy < size - 2)
            keep &= background(target, pixels, scene) & background(source, q, scene)
            keep = torch.from_numpy(keep.reshape(size, size))
            assert keep.sum() > 200
            err_warped = (warped - frames[b, frame_target]).abs().mean(0)[keep].mean()
            err_plain = (frames[b, frame_source] - frames[b, frame_target]).abs().mean(0)[keep].mean()
            assert err_warped < 0.01, (b, err_warped, err_plain)
            moved += err_plain > 0.03
    assert moved >= 6


def test_prepare_synthetic_writes_windows(tmp_path: Path, bank: PhotoBank) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(4):
        cv2.imwrite(str(photos / f"p{k}.png"), photo(k))
    config = SceneConfig(size=32, max_motion=8.0)
    kw = dict(count=5, seed=1, config=config, device="cpu", scenes_per_unit=3, batch=2)
    prepare_synthetic(photos, tmp_path / "v2", **kw)
    prepare_synthetic(photos, tmp_path / "v1", windows=False, **kw)
    v2, v1 = PatchCache(tmp_path / "v2"), PatchCache(tmp_path / "v1")
    assert v2.has_windows and not v1.has_windows and len(v2) == len(v1) == 5
    expected = SceneRenderer(PhotoBank.from_folder(photos), config, device="cpu").render(range(5), 1, windows=True)
    for i in range(5):
        window, valid = v2.window(i)
        assert valid and np.array_equal(window, expected.to_uint8()[i]) and np.array_equal(v1[i], v2[i])
    index = json.loads((tmp_path / "v2" / "index.json").read_text())
    assert index["version"] == 2 and "windows" not in index["parameters"]
    with pytest.raises(OutputError, match="version-2"):
        prepare_synthetic(photos, tmp_path / "v2", windows=False, **kw)
