"""`sepconv prepare` on tiny DAVIS-layout folders and videos made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sepconv_cli.data.cache import FORMAT_VERSION, PatchCache, default_cache_dir, read_index
from sepconv_cli.data.prepare import SelectionParams, find_sequences, keep_probability, prepare_frames
from sepconv_cli.errors import InputError, OutputError

H, W = 64, 96
# Small patches, and 2 triplets per unit so that resuming has several units to skip.
PARAMS = SelectionParams(size=32, patches=3, triplets_per_unit=2)


def texture(seed: int, h: int = 200, w: int = 260, warm: bool = True) -> np.ndarray:
    """Smooth random RGB texture; warm (red/yellow) or cool (blue/green) colours, so
    that switching between the two is a shot cut for ``scenes.is_cut``."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 10, w // 10, 3))
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    lo, hi = (np.array([0.6, 0.2, 0.0]), np.array([1.0, 0.6, 0.2])) if warm else (np.array([0.0, 0.3, 0.6]), np.array([0.2, 0.6, 1.0]))
    return np.rint((lo + (hi - lo) * img) * 255).astype(np.uint8)


def pan(frames: int, cut_at: int | None = None, seed: int = 0, h: int = H, w: int = W) -> list[np.ndarray]:
    """RGB frames of a camera pan (3 px right, 1 px down per frame), optionally cut."""
    scenes = [texture(seed), texture(seed + 100, warm=False)]
    out = []
    for i in range(frames):
        src = scenes[1 if cut_at is not None and i >= cut_at else 0]
        out.append(src[10 + i : 10 + i + h, 10 + 3 * i : 10 + 3 * i + w])
    return out


def write_sequence(folder: Path, frames: list[np.ndarray], ext: str = ".jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:05d}{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_davis(root: Path, sequences: dict[str, int], cut: dict[str, int] | None = None) -> Path:
    cut = cut or {}
    for k, (name, n) in enumerate(sorted(sequences.items())):
        write_sequence(root / "JPEGImages" / "480p" / name, pan(n, cut.get(name), seed=k))
        # DAVIS ships masks beside the frames; they must not be taken for a sequence.
        write_sequence(root / "Annotations" / "480p" / name, [np.zeros((H, W, 3), np.uint8)] * 3, ".png")
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_davis_counts_and_layout(tmp_path: Path) -> None:
    davis = make_davis(tmp_path / "davis", {"bear": 6, "car": 5, "tiny": 2})
    summary = prepare_frames(davis, tmp_path / "cache", PARAMS)
    c = summary.counts
    assert c["sequences"] == 3 and c["short_sequences"] == 1
    assert c["triplets"] == 4 + 3 and c["cuts"] == 0
    assert any("tiny" in p for p in summary.problems)
    cache = PatchCache(tmp_path / "cache")
    assert len(cache) == c["patches"]
    assert 0 < len(cache) <= 3 * 7
    assert cache.complete and cache[0].shape == (3, 3, 32, 32) and cache[0].dtype == np.uint8
    # The first patch comes from bear's first triplet: each of its frames is an exact
    # crop (RGB, channels first) of frames 0, 1, 2 at one and the same window.
    frames = [cv2.cvtColor(cv2.imread(str(davis / f"JPEGImages/480p/bear/{i:05d}.jpg")), cv2.COLOR_BGR2RGB) for i in range(3)]
    patch = cache[0].transpose(0, 2, 3, 1)
    x, y = cv2.minMaxLoc(cv2.matchTemplate(frames[1], np.ascontiguousarray(patch[1]), cv2.TM_SQDIFF))[2]
    for f, p in zip(frames, patch):
        assert np.array_equal(f[y : y + 32, x : x + 32], p)
    assert not np.array_equal(patch[0], patch[2])  # it moves
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["source"] == str(davis.resolve()) and index["seed"] == 0 and index["version"] == FORMAT_VERSION
    assert index["parameters"]["patches"] == 3 and index["counts"]["patches"] == len(cache)
    png = cv2.imread(str(summary.histogram_png))
    assert png is not None and png.shape[2] == 3
    # The pan moves sqrt(6^2 + 2^2) = 6.3 px between the outer frames: kept windows sit near it.
    kept = np.array(index["histogram"]["kept"])
    assert kept.sum() == len(cache) and kept[2:5].sum() == kept.sum()


def test_selection_formula() -> None:
    assert keep_probability(0.0) == 0.0
    assert keep_probability(4.0) == pytest.approx(1 - np.exp(-1))
    assert keep_probability(1.0) < keep_probability(4.0) < keep_probability(10.0) < 1.0


def test_static_windows_rejected(tmp_path: Path) -> None:
    still = [texture(0)[:H, :W]] * 4
    write_sequence(tmp_path / "seqs" / "still", still)
    summary = prepare_frames(tmp_path / "seqs", tmp_path / "cache", PARAMS)
    assert summary.counts["triplets"] == 2 and summary.counts["patches"] == 0
    assert summary.counts["static_windows"] == summary.counts["windows"] > 0
    with pytest.raises(InputError, match="holds no triplets"):
        PatchCache(tmp_path / "cache")


def test_same_seed_same_bytes_any_workers(tmp_path: Path) -> None:
    davis = make_davis(tmp_path / "davis", {"bear": 6, "car": 5})
    prepare_frames(davis, tmp_path / "a", PARAMS, workers=1)
    prepare_frames(davis, tmp_path / "b", PARAMS, workers=2)
    prepare_frames(davis, tmp_path / "c", SelectionParams(**{**PARAMS.__dict__, "seed": 1}))
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert a == b
    shards = lambda tree: {k: v for k, v in tree.items() if k.startswith("shards/")}  # noqa: E731
    assert shards(a) and shards(a) != shards(c)  # another seed picks other windows


def test_cut_rejected(tmp_path: Path) -> None:
    # Frames 0-2 one shot, 3-5 another: triplets (1,2,3) and (2,3,4) straddle the cut.
    make_davis(tmp_path / "davis", {"cut": 6}, cut={"cut": 3})
    summary = prepare_frames(tmp_path / "davis", tmp_path / "cache", PARAMS)
    assert summary.counts["triplets"] == 4 and summary.counts["cuts"] == 2
    assert 0 < summary.counts["patches"] <= 2 * PARAMS.patches
    # With cut detection off, SimpleFlow meets frames it cannot match (NaN flow): no crash.
    off = prepare_frames(tmp_path / "davis", tmp_path / "off", SelectionParams(**{**PARAMS.__dict__, "cut_threshold": 0.0}))
    assert off.counts["cuts"] == 0 and off.counts["triplets"] == 4


def test_resume_after_interruption_equals_uninterrupted(tmp_path: Path) -> None:
    davis = make_davis(tmp_path / "davis", {"bear": 6, "car": 5})
    prepare_frames(davis, tmp_path / "whole", PARAMS)

    def stop_after_first_unit(done: int, total: int | None) -> None:
        assert total == 7
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_frames(davis, tmp_path / "resumed", PARAMS, progress=stop_after_first_unit)
    partial = read_index(tmp_path / "resumed")
    assert not partial.complete and len(partial.units) == 1
    assert len(PatchCache(tmp_path / "resumed")) == partial.units[0].patches  # usable as it is

    seen: list[int] = []
    summary = prepare_frames(davis, tmp_path / "resumed", PARAMS, progress=lambda d, t: seen.append(d))
    assert summary.units_done_before == 1 and seen[0] == 2 and seen[-1] == 7
    assert tree_bytes(tmp_path / "resumed") == tree_bytes(tmp_path / "whole")
    # A finished cache is left alone; other parameters are refused rather than mixed in.
    assert prepare_frames(davis, tmp_path / "resumed", PARAMS).counts == summary.counts
    with pytest.raises(OutputError, match="patches"):
        prepare_frames(davis, tmp_path / "resumed", SelectionParams(**{**PARAMS.__dict__, "patches": 5}))


def test_video_source(tmp_path: Path) -> None:
    from tests.media import make_video

    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "clip.mp4", width=96, height=64, frames=8, cut_at=4, audio=False)
    summary = prepare_frames(videos, tmp_path / "cache", PARAMS)
    c = summary.counts
    assert c["sequences"] == 1 and c["triplets"] == 6
    assert c["cuts"] == 2  # (2,3,4) and (3,4,5)
    assert c["patches"] == len(PatchCache(tmp_path / "cache")) > 0
    # A single video file works too, and gives the same patches.
    prepare_frames(videos / "clip.mp4", tmp_path / "single", PARAMS)
    assert tree_bytes(tmp_path / "single")["shards/000000.npy"] == tree_bytes(tmp_path / "cache")["shards/000000.npy"]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        prepare_frames(tmp_path / "missing", tmp_path / "cache", PARAMS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image sequences or videos"):
        prepare_frames(tmp_path / "empty", tmp_path / "cache", PARAMS)

    seqs = tmp_path / "seqs"
    write_sequence(seqs / "broken", pan(5))
    (seqs / "broken" / "00002.jpg").write_bytes(b"not a jpeg")  # in all three triplets
    frames = pan(5)
    frames[4] = cv2.resize(frames[4], (W + 8, H))  # the last triplet has mixed sizes
    write_sequence(seqs / "mixed", frames)
    write_sequence(seqs / "short", pan(2))
    summary = prepare_frames(seqs, tmp_path / "cache", PARAMS)
    c = summary.counts
    assert c["sequences"] == 3 and c["short_sequences"] == 1
    assert c["unreadable_images"] == 1 and c["unreadable_triplets"] == 3
    assert c["mixed_size_triplets"] == 1
    assert c["triplets"] == 6 and c["patches"] > 0  # mixed's first two triplets still count
    assert any("00002.jpg" in p for p in summary.problems)

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a patch cache"):
        prepare_frames(seqs, tmp_path / "other", PARAMS)


def test_cache_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        PatchCache(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a patch cache"):
        PatchCache(tmp_path / "empty")
    make_davis(tmp_path / "davis", {"bear": 4})
    prepare_frames(tmp_path / "davis", tmp_path / "cache", PARAMS)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    index["version"] = FORMAT_VERSION + 1
    (tmp_path / "cache" / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="format version"):
        PatchCache(tmp_path / "cache")


def test_find_sequences_layouts(tmp_path: Path) -> None:
    make_davis(tmp_path / "davis", {"b": 3, "a": 3})
    (tmp_path / "davis" / "JPEGImages" / "Full-Resolution" / "a").mkdir(parents=True)
    names = [s.name for s in find_sequences(tmp_path / "davis")]
    assert names == ["a", "b"]  # 480p preferred, masks ignored
    write_sequence(tmp_path / "flat", pan(3))
    assert [(s.name, len(s.paths)) for s in find_sequences(tmp_path / "flat")] == [("flat", 3)]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SEPCONV_CACHE", raising=False)
    assert default_cache_dir() == Path("cache") / "patches"
    monkeypatch.setenv("SEPCONV_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"


def test_cli_user_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sepconv_cli.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEPCONV_CACHE", raising=False)
    make_davis(tmp_path / "davis", {"bear": 5})
    runner = CliRunner()
    # The user's command as written (plus a small --size for these 96x64 frames).
    result = runner.invoke(cli, ["prepare", "davis/", "--patches", "20", "--size", "32", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len(PatchCache(tmp_path / "cache" / "patches")) > 0
    assert "patches kept from 3 triplets" in result.output and "flow-histogram.png" in result.output

    result = runner.invoke(cli, ["prepare", "nowhere/"])
    assert result.exit_code == InputError.exit_code and "error: nowhere does not exist" in result.output
    result = runner.invoke(cli, ["prepare"])
    assert result.exit_code == 2 and "SOURCE or --synthetic" in result.output


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sepconv_cli.cli import cli
    import sepconv_cli.commands.prepare as command

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "prepare_frames", interrupted)
    (tmp_path / "frames").mkdir()
    result = CliRunner().invoke(cli, ["prepare", str(tmp_path / "frames"), "--out", str(tmp_path / "cache")])
    assert result.exit_code == 130
    assert "interrupted; finished shards are kept in" in result.output and "Aborted" not in result.output
