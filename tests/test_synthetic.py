"""Procedural scenes: determinism, exact motion, magnitudes, and `prepare --synthetic`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from sepconv_cli.data.cache import PatchCache, read_index
from sepconv_cli.data.prepare import prepare_synthetic
from sepconv_cli.data.synthetic import PhotoBank, SceneConfig, SceneRenderer
from sepconv_cli.errors import InputError, OutputError

SMALL = SceneConfig(size=48, max_motion=12.0)


def photo(seed: int, h: int = 180, w: int = 240) -> np.ndarray:
    """A procedural 'photograph': smooth colour noise plus a few sharp-edged discs."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 12, w // 12, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.rint(img.clip(0, 1) * 255).astype(np.uint8)
    for _ in range(6):
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.circle(img, centre, int(rng.integers(8, 30)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    return img


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: torch's intra-op threads only add overhead (10x on a busy 2-core box).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"p{k}.png"), photo(k))
    return folder


@pytest.fixture
def bank() -> PhotoBank:
    return PhotoBank.from_arrays([photo(k) for k in range(4)], side=128)


def test_deterministic_and_batch_independent(bank: PhotoBank) -> None:
    a = SceneRenderer(bank, SMALL, device="cpu").render(range(6), seed=3)
    b = SceneRenderer(bank, SMALL, device="cpu").render(range(6), seed=3)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.flow, b.flow)
    assert a.frames.shape == (6, 3, 3, 48, 48) and a.frames.dtype == torch.float32
    assert 0 <= a.frames.min() and a.frames.max() <= 1
    one = SceneRenderer(bank, SMALL, device="cpu").render([4], seed=3)
    assert torch.allclose(one.frames[0], a.frames[4], atol=1e-6)
    other = SceneRenderer(bank, SMALL, device="cpu").render(range(6), seed=4)
    assert not torch.equal(a.frames, other.frames)


def test_zero_motion_gives_identical_frames(bank: PhotoBank) -> None:
    still = SceneRenderer(bank, SceneConfig(size=48, max_motion=0.0, effects=False), device="cpu")
    out = still.render(range(4))
    assert torch.equal(out.frames[:, 0], out.frames[:, 1]) and torch.equal(out.frames[:, 1], out.frames[:, 2])
    assert out.flow.abs().max() == 0


def test_middle_frame_is_not_the_average(bank: PhotoBank) -> None:
    cfg = SceneConfig(size=64, max_motion=30.0, effects=False, static_fraction=0.0)
    out = SceneRenderer(bank, cfg, device="cpu").render(range(8))
    f0, f1, f2 = out.frames.unbind(1)
    moving = out.flow.norm(dim=1) > 3  # (B, S, S)
    err_avg = (f1 - (f0 + f2) / 2).abs().mean(1)[moving].mean()
    err_outer = torch.minimum((f1 - f0).abs(), (f1 - f2).abs()).mean(1)[moving].mean()
    assert moving.any() and err_avg > 0.02 and err_outer > 0.01


def test_flow_matches_the_rendered_motion(bank: PhotoBank) -> None:
    """Warping frame 1 by the returned flow reproduces frame 0 (away from occlusions)."""
    cfg = SceneConfig(size=64, max_motion=20.0, effects=False, static_fraction=0.0)
    out = SceneRenderer(bank, cfg, device="cpu").render(range(6))
    S = cfg.size
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")
    tx = xs + out.flow[:, 0]
    ty = ys + out.flow[:, 1]
    grid = torch.stack([(2 * tx + 1) / S - 1, (2 * ty + 1) / S - 1], -1)
    warped = F.grid_sample(out.frames[:, 2], grid, align_corners=False)
    inside = ((tx > 1) & (tx < S - 2) & (ty > 1) & (ty < S - 2))[:, None].expand_as(warped)
    err_warped = (warped - out.frames[:, 0]).abs()[inside].median()
    err_plain = (out.frames[:, 2] - out.frames[:, 0]).abs()[inside].median()
    assert err_warped < 0.01 < err_plain


def test_motion_magnitudes_within_range(bank: PhotoBank) -> None:
    cfg = SceneConfig(max_layers=1, effects=False)  # the default 150 px, 40 px
    out = SceneRenderer(bank, cfg, device="cpu").render(range(24), seed=1)
    peak = out.flow.norm(dim=1).amax(dim=(1, 2))
    assert peak.max() <= cfg.max_motion + 1e-3
    assert (out.motion <= cfg.max_motion).all()
    assert (peak < 10).any() and (peak > 25).any()  # spread over the range


def test_prepare_synthetic_cache_and_resume(photos: Path, tmp_path: Path) -> None:
    kw = dict(count=10, seed=2, config=SMALL, device="cpu", scenes_per_unit=4, batch=3)
    summary = prepare_synthetic(photos, tmp_path / "whole", **kw)
    cache = PatchCache(tmp_path / "whole")
    assert len(cache) == summary.counts["patches"] == 10
    expected = SceneRenderer(PhotoBank.from_folder(photos), SMALL, device="cpu").render(range(10), seed=2).to_uint8()
    assert np.array_equal(np.stack([cache[i] for i in range(10)]), expected)

    def stop(done: int, total: int | None) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_synthetic(photos, tmp_path / "resumed", progress=stop, **kw)
    assert len(read_index(tmp_path / "resumed").units) == 1
    again = prepare_synthetic(photos, tmp_path / "resumed", **kw)
    assert again.units_done_before == 1
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(tmp_path / "resumed") == files(tmp_path / "whole")
    with pytest.raises(OutputError, match="count"):
        prepare_synthetic(photos, tmp_path / "resumed", **{**kw, "count": 11})


def test_bad_photo_folders(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        PhotoBank.from_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        PhotoBank.from_folder(tmp_path / "empty")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    bank = PhotoBank.from_folder(photos)
    assert len(bank.skipped) == 1 and len(bank) == 4 * 1  # 240x180 -> one square crop each


def test_cli_synthetic(photos: Path, tmp_path: Path) -> None:
    from sepconv_cli.cli import cli

    runner = CliRunner()
    out = tmp_path / "cache"
    result = runner.invoke(cli, ["prepare", "--synthetic", str(photos), "--count", "5", "--out", str(out),
                                 "--size", "32", "--workers", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(PatchCache(out)) == 5 and "5 synthetic triplets" in result.output
    result = runner.invoke(cli, ["prepare", "--synthetic", str(photos), "--out", str(out)])
    assert result.exit_code == 2 and "--count" in result.output
