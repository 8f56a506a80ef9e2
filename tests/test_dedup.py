"""``--dedup``: repeated frames dropped, motion re-timed evenly, real pauses kept still.

Two clips as they come out of real tools: a textured square animated "on twos" (each
drawing shown for two frames) and a screen-recording-like clip (a window moves, stands
still for a second, moves again), both encoded lossy with libx264 so the copies are
near-identical rather than exact. Motion is measured in the output by the square's
centroid, frame by frame.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.duplicates import (
    AUTO_CAP, AUTO_FLOOR, DEFAULT_THRESHOLD, AutoThreshold, DuplicateFilter, block_differences, difference,
)
from sepconv_cli.models import build_model, save_weights
from sepconv_cli.pipeline import VideoOptions, interpolate_video, retime_video
from sepconv_cli.video import Frame
from tests.media import decode_rgb, texture

W, H, BOX = 96, 64, 16



def picture(x: float) -> np.ndarray:
    """The warm background with a cool textured square whose left edge is at ``x``."""
    rgb = texture(0, W, H).copy()
    square = texture(0, BOX, BOX, scene=1)
    left = int(round(x))
    rgb[24 : 24 + BOX, left : left + BOX] = square
    return rgb


def render(path: Path, positions: list[float], rate: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.options = {"preset": "ultrafast", "crf": "12"}
        for i, x in enumerate(positions):
            frame = av.VideoFrame.from_ndarray(picture(x), format="rgb24").reformat(format="yuv444p")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def centroid(rgb: np.ndarray) -> float:
    """The square's horizontal centroid: its pixels are blue-green, the background red."""
    r, b = rgb[..., 0].astype(np.int32), rgb[..., 2].astype(np.int32)
    weight = np.clip(b - r, 0, None).astype(np.float64)
    return float((weight.sum(axis=0) * np.arange(rgb.shape[1])).sum() / weight.sum())


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_difference_ignores_compression_noise_but_not_a_small_change() -> None:
    a = picture(10)
    rng = np.random.default_rng(0)
    noisy = np.clip(a.astype(np.int16) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    assert difference(a, a) == 0
    assert difference(a, noisy) <= 2
    pointer = a.copy()
    pointer[5:9, 5:6] = 255  # a one-pixel-wide sliver, as a mouse pointer's edge moving by one pixel
    assert difference(a, pointer) > AUTO_FLOOR
    assert difference(a.astype(np.uint16) * 257, pointer.astype(np.uint16) * 257) == pytest.approx(difference(a, pointer), rel=1e-4)
    # A change of colour alone (same luma) counts: the strongest channel decides.
    tinted = a.copy()
    tinted[:8, :8] = (tinted[:8, :8].astype(np.int16) + (-30, 15, 0)).clip(0, 255)
    assert difference(a, tinted) >= 29


@pytest.mark.parametrize("shape, dtype", [((16, 24, 3), np.uint8), ((13, 21, 3), np.uint8), ((5, 7, 3), np.uint16)])
def test_block_differences_match_a_plain_loop(shape: tuple[int, int, int], dtype: type) -> None:
    rng = np.random.default_rng(1)
    top = np.iinfo(dtype).max
    a, b = rng.integers(0, top, shape, dtype=dtype), rng.integers(0, top, shape, dtype=dtype)
    got = block_differences(a, b)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) * (255 / top)
    for by in range(got.shape[0]):
        for bx in range(got.shape[1]):
            block = diff[8 * by: 8 * by + 8, 8 * bx: 8 * bx + 8]  # partial at the right and bottom edges
            assert got[by, bx] == pytest.approx(max(block[..., c].mean() for c in range(3)), rel=1e-5)


def test_the_automatic_threshold_sits_between_copies_and_changes() -> None:
    auto = AutoThreshold()
    assert auto.value() == AUTO_FLOOR  # nothing seen yet
    for peak in [1.0, 24.0] * 12:  # drawn on twos: copies at 1 level, changes at 24
        auto.add(peak)
    assert 1.0 * 3 < auto.value() <= 24 / 1.25
    auto = AutoThreshold()
    for peak in [18.0, 22.0, 25.0, 20.0] * 6:  # every frame moves: no copies to learn from
        auto.add(peak)
    assert auto.value() == AUTO_FLOOR
    auto = AutoThreshold()
    for peak in [2.0, 150.0] * 12:
        auto.add(peak)
    assert auto.value() == AUTO_CAP  # never call a 20-level change a copy


def test_filter_keeps_first_appearances_holds_long_pauses_and_the_end() -> None:
    def frames(names: str) -> list[Frame]:
        shade = {c: np.full((8, 8, 3), 40 * i, np.uint8) for i, c in enumerate("ABCD")}
        return [Frame(rgb=shade[c], pts=Fraction(i), index=i, timestamp=i) for i, c in enumerate(names)]

    dedup = DuplicateFilter(max_repeats=3)
    out = [(f.index, hold) for f, hold in dedup(frames("AABBCC"))]
    assert out == [(0, False), (2, False), (4, False), (5, True)] and dedup.found == 3
    dedup = DuplicateFilter(max_repeats=3)
    # Three copies are a drawing held on fours; seven are a pause: held to its end.
    out = [(f.index, hold) for f, hold in dedup(frames("AAAABAAAAAAAAC"))]
    assert out == [(0, False), (4, False), (5, False), (12, True), (13, False)]
    assert dedup.found == 3 + 7


def test_frames_on_twos_come_out_moving_evenly(tmp_path: Path, flowsep_weights: Path) -> None:
    # 12 drawings 6 px apart, each shown twice at 24 fps: 3 px per frame on average.
    src = render(tmp_path / "twos.mp4", [8 + 6 * (i // 2) for i in range(24)], rate=24)
    out = tmp_path / "even.mkv"
    code, output = run("interpolate", src, "--out", out, "--dedup", "--lossless", "--weights", flowsep_weights)
    assert code == 0, output
    assert "12 duplicate frames found" in output and "24 → 48 frames" in output and "24 → 48 fps" in output
    positions = np.array([centroid(f) for f in decode_rgb(out)])
    # Drawing k first appears at frame 2k: output frame 4k; the last one (k = 11) is held to the end.
    moving = positions[: 4 * 11 + 1]
    steps = np.diff(moving)
    assert np.all(np.abs(steps - 1.5) < 0.75), steps.round(2)  # never still, never a jump
    line = np.polyval(np.polyfit(np.arange(moving.size), moving, 1), np.arange(moving.size))
    # Every frame within half a step of where even motion puts it (the untrained flow
    # baseline and the centroid of a 16 px square are good to about a third of a pixel).
    assert np.abs(moving - line).max() < 0.75
    assert np.allclose(positions[44:], positions[44], atol=0.2)

    # Without --dedup the same clip moves in jerks: still, then 3 px.
    code, output = run("interpolate", src, "--out", tmp_path / "jerky.mkv", "--lossless", "--weights", flowsep_weights)
    assert code == 0, output
    jerky = np.array([centroid(f) for f in decode_rgb(tmp_path / "jerky.mkv")][:45])
    assert np.abs(np.diff(jerky)).max() > 2.5 and np.abs(np.diff(jerky)).min() < 0.2
    line = np.polyval(np.polyfit(np.arange(jerky.size), jerky, 1), np.arange(jerky.size))
    assert np.abs(jerky - line).max() > 1.0


def test_a_screen_recording_pause_stays_still(tmp_path: Path, flowsep_weights: Path) -> None:
    # A window moves 2 px per frame, stands still for 30 frames (a second), then moves on.
    positions = [4 + 2 * i for i in range(15)] + [32] * 30 + [32 + 2 * i for i in range(1, 16)]
    src = render(tmp_path / "screen.mp4", positions, rate=30)
    out = tmp_path / "screen.60.mkv"
    code, output = run("interpolate", src, "--out", out, "--dedup", "--lossless", "--weights", flowsep_weights)
    assert code == 0, output
    assert "30 duplicate frames found" in output and "30 → 60 fps" in output
    frames = decode_rgb(out)
    assert len(frames) == 120
    centres = np.array([centroid(f) for f in frames])
    # Output frame k is at k/60 s: the pause covers input frames 14..44, output 28..88.
    still = centres[28:89]
    assert np.allclose(still, still[0], atol=0.05)
    # Held, not predicted: the very frame that began the pause (88 is input frame 44, its last copy).
    assert all(np.array_equal(frames[28], f) for f in frames[29:88])
    # Motion on both sides is even (1 px per output frame), not smeared into the pause.
    assert np.all(np.abs(np.diff(centres[:29]) - 1.0) < 0.4), np.diff(centres[:29]).round(2)
    assert np.all(np.abs(np.diff(centres[88:118]) - 1.0) < 0.4), np.diff(centres[88:118]).round(2)


def test_progress_and_the_report_count_every_input_frame(tmp_path: Path) -> None:
    src = render(tmp_path / "twos.mp4", [8 + 6 * (i // 2) for i in range(8)], rate=24)
    calls: list[int] = []
    report = retime_video(src, tmp_path / "o.mkv", lambda a, b, t: a, lambda r: 2 * r,
                          options=VideoOptions(dedup=DEFAULT_THRESHOLD, lossless=True),
                          progress=lambda done, total: calls.append(done))
    assert calls == list(range(1, 9))
    assert report.input_frames == 8 and report.duplicates == 4 and report.output_frames == 16
    assert "4 duplicate frames found" in report.summary()


def test_dedup_needs_a_model_that_predicts_any_time(tmp_path: Path) -> None:
    src = render(tmp_path / "twos.mp4", [8, 8, 14, 14], rate=24)
    torch.manual_seed(0)
    weights = tmp_path / "sepconv.pt"
    save_weights(build_model("sepconv", {"kernel_size": 5, "channels": [4, 4, 8, 8, 8]}), weights)
    code, output = run("interpolate", src, "--out", tmp_path / "o.mp4", "--dedup", "--weights", weights)
    assert code == 2 and output.startswith("error: --dedup needs a model that predicts any time")
    assert output.count("\n") == 1 and not (tmp_path / "o.mp4").exists()
    with pytest.raises(ValueError, match="retime_video"):
        interpolate_video(src, tmp_path / "o.mp4", lambda a, b: a, options=VideoOptions(dedup=2.0))


def test_dedup_on_a_piped_stream_takes_its_rate_from_the_stream(tmp_path: Path, flowsep_weights: Path) -> None:
    import io

    src = render(tmp_path / "twos.mp4", [8 + 6 * (i // 2) for i in range(8)], rate=24)
    buf = io.BytesIO()
    with av.open(str(src)) as inp, av.open(buf, "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        for i, frame in enumerate(inp.decode(video=0)):
            frame.pts, frame.time_base = i, Fraction(1, 24)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    result = CliRunner().invoke(cli, ["interpolate", "-", "--out", str(tmp_path / "o.mkv"), "--dedup", "--lossless",
                                      "--weights", str(flowsep_weights)], input=buf.getvalue())
    assert result.exit_code == 0, result.output
    assert "8 → 16 frames, 24 → 48 fps" in result.output and "4 duplicate frames found" in result.output


# -- lossy encodes ---------------------------------------------------------------------

LW, LH = 128, 96


def drawing(kind: str, k: int) -> np.ndarray:
    """Drawing ``k`` of a textured test scene: a 16 px square moving 6 px per drawing
    ("fast"), 1 px ("slow"), a 4 px dot moving 2 px ("dot"), the whole picture panning
    1 px ("pan"), or the square and the dot taking turns ("both": a small change between
    big ones, which must not pass for a copy)."""
    if kind == "pan":
        return texture(0, LW + 64, LH)[:, 64 - k: 64 - k + LW]
    rgb = texture(0, LW, LH).copy()
    if kind == "both":
        x = 8 + 6 * ((k + 1) // 2)
        rgb[40:56, x: x + 16] = texture(0, 16, 16, scene=1)
        rgb[10:14, 8 + 2 * (k // 2): 12 + 2 * (k // 2)] = (30, 60, 200)
        return rgb
    if kind == "dot":
        rgb[30:34, 8 + 2 * k: 12 + 2 * k] = (30, 60, 200)
    else:
        x = 8 + (6 if kind == "fast" else 1) * k
        rgb[40:56, x: x + 16] = texture(0, 16, 16, scene=1)
    return rgb


def lossy(path: Path, kind: str, hold: int, codec: str, crf: int, frames: int = 36) -> list[Frame]:
    """Drawings held ``hold`` frames each, encoded as a camera or an editor would (4:2:0,
    the encoder's default preset and GOP with B-frames), decoded back."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = LW, LH, "yuv420p"
        stream.options = {"crf": str(crf), **({"x265-params": "log-level=error"} if codec == "libx265" else {})}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(drawing(kind, i // hold), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 24)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        return [Frame(rgb=f.to_ndarray(format="rgb24"), pts=Fraction(i, 24), index=i, timestamp=i)
                for i, f in enumerate(container.decode(video=0))]


X265 = "libx265" in av.codecs_available


NEEDS_X265 = pytest.mark.skipif(not X265, reason="PyAV without libx265")


@pytest.mark.parametrize("codec, crf, kinds", [
    *[("libx264", crf, ("fast", "slow", "dot", "pan", "both")) for crf in (18, 23, 28)],
    # x265 at this tiny size smears a slow or small change over two frames (the "copy" then
    # differs from the first by more than the change did, and at crf 28 even a pan does):
    # no comparison of frames can tell those copies apart, so only what it codes cleanly.
    pytest.param("libx265", 18, ("fast", "pan"), marks=NEEDS_X265),
    pytest.param("libx265", 23, ("fast", "pan"), marks=NEEDS_X265),
    pytest.param("libx265", 28, ("fast",), marks=NEEDS_X265),
])
@pytest.mark.parametrize("hold", [2, 3])
def test_every_copy_of_a_lossy_encode_is_found_and_no_change_is_lost(
    tmp_path: Path, codec: str, kinds: tuple[str, ...], crf: int, hold: int
) -> None:
    for kind in kinds:
        frames = lossy(tmp_path / f"{kind}.mkv", kind, hold, codec, crf)
        dedup = DuplicateFilter(max_repeats=3)
        kept = [f.index for f, held in dedup(frames) if not held]
        assert kept == list(range(0, len(frames), hold)), (kind, kept)
        assert dedup.found == len(frames) - len(kept)


def test_a_fixed_threshold_is_still_taken_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    frames = lossy(tmp_path / "fast.mkv", "fast", 2, "libx264", 28)
    strict = DuplicateFilter(0.5)  # below the encode's noise: most copies are kept
    list(strict(frames))
    assert strict.found < 18
    src = render(tmp_path / "twos.mp4", [8, 8, 14, 14], rate=24)
    code, output = run("interpolate", src, "--out", tmp_path / "o.mkv", "--dedup", "--dedup-threshold", "lots")
    assert code == 2 and output == "error: --dedup-threshold 'lots': give auto or a number of levels from 0 to 255\n"
