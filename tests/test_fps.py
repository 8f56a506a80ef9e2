"""``--fps RATE`` / ``retime_video``: output frames at exact times k/RATE, any rate.

Most tests use a recording stand-in for ``Interpolator.at`` (a linear blend in time);
the last ones run the real, untrained flowsep network (the optical-flow baseline)
through the CLI.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.errors import OutputError
from sepconv_cli.models.registry import build_model, save_weights
from sepconv_cli.pipeline import VideoOptions, midpoint_factor, output_time_base, retime_video
from sepconv_cli.video import iter_frames, probe
from tests.conftest import TINY_SEPCONV
from tests.media import make_video, texture

FAST = {"preset": "ultrafast"}


class RecordingAt:
    """Stands in for ``Interpolator.at``: a blend linear in t, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert a.shape == b.shape and a.dim() == 4 and t.shape == (a.shape[0],)
        self.calls.append((a.clone(), b.clone(), t.clone()))
        w = t.float()[:, None, None, None]
        return a * (1 - w) + b * w

    @property
    def times(self) -> list[float]:
        return [x for _, _, t in self.calls for x in t.tolist()]


def retime(src: Path, dst: Path, rate, at=None, **options):
    at = at or RecordingAt()
    return retime_video(src, dst, at, rate, options=VideoOptions(**{**FAST, **options})), at


def video_pts(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.pts * s.time_base for f in c.decode(s)]


def video_end(path: Path) -> Fraction:
    """Where the video stream ends: the last packet's pts + duration, exactly."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        last = max((p for p in c.demux(s) if p.size), key=lambda p: p.pts)
        return (last.pts + last.duration) * s.time_base


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def expected_t(src_pts: list[Fraction], out_times: list[Fraction]) -> list[Fraction]:
    """For every output time that is not an input time: its exact fraction of the way
    between the input frames around it (the last frame is held, not predicted)."""
    ts = []
    for s in out_times:
        if s in src_pts or s >= src_pts[-1]:
            continue
        i = max(j for j, p in enumerate(src_pts) if p < s)
        ts.append((s - src_pts[i]) / (src_pts[i + 1] - src_pts[i]))
    return ts


# -- pure rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time_base", "rate", "expected"),
    [
        (Fraction(1, 12800), Fraction(60), Fraction(1, 38400)),
        (Fraction(1, 30000), Fraction(60), Fraction(1, 30000)),
        (Fraction(1, 24), Fraction(60), Fraction(1, 120)),
        (Fraction(1001, 30000), Fraction(60000, 1001), Fraction(1001, 60000)),
        (Fraction(1, 1000), Fraction(2997, 50), Fraction(1, 3000 * 999)),
    ],
)
def test_output_time_base_holds_every_input_and_output_time(time_base: Fraction, rate: Fraction, expected: Fraction) -> None:
    tb = output_time_base(time_base, rate)
    assert tb == expected
    assert (time_base / tb).denominator == 1 and (1 / (rate * tb)).denominator == 1


def test_midpoint_factor_only_for_2_4_8_times_the_input_rate() -> None:
    assert midpoint_factor(Fraction(50), Fraction(25)) == 2
    assert midpoint_factor(Fraction(60000, 1001), Fraction(30000, 1001)) == 2
    assert midpoint_factor(Fraction(240), Fraction(30)) == 8
    for rate, base in [(60, 25), (30, 25), (25, 25), (12, 24), (60, 30000 / Fraction(1001)), (48, 0)]:
        assert midpoint_factor(Fraction(rate), Fraction(base)) is None


@pytest.mark.parametrize("bad", [0, -24, "fast"])
def test_retime_refuses_a_rate_that_is_not_positive(tmp_path: Path, bad) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    with pytest.raises(ValueError, match="rate must be"):
        retime(src, tmp_path / "out.mp4", bad)
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(("rate", "exact"), [(59.94, Fraction(2997, 50)), ("30000/1001", Fraction(30000, 1001)), (50, Fraction(50))])
def test_rate_may_be_a_float_as_written_a_string_or_an_int(tmp_path: Path, rate, exact: Fraction) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    report, _ = retime(src, tmp_path / "out.mp4", rate)
    assert report.output_rate == exact
    assert video_pts(tmp_path / "out.mp4") == [k / exact for k in range(report.output_frames)]


# -- constant-rate input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "frames_out"),
    [
        (Fraction(24), Fraction(60), 30),  # 12 frames = 0.5 s → 30 at 60 fps
        (Fraction(25), Fraction(30), 15),  # 0.48 s → 14.4: 15, the last one shortened
        (Fraction(30000, 1001), Fraction(60), 25),  # 0.4004 s → 24.024: 25
        (Fraction(60), Fraction(24), 5),  # lower: 0.2 s → 4.8: 5
    ],
    ids=["24-60", "25-30", "ntsc-60", "60-24"],
)
def test_cfr_output_times_are_exactly_k_over_rate(
    tmp_path: Path, rate_in: Fraction, rate_out: Fraction, frames_out: int
) -> None:
    src = make_video(tmp_path / "in.mp4", frames=12, rate=rate_in, audio=False)
    src_pts = video_pts(src)
    report, at = retime(src, tmp_path / "out.mp4", rate_out)
    out = video_pts(tmp_path / "out.mp4")
    assert frames_out == math.ceil((video_end(src) - src_pts[0]) * rate_out)
    assert len(out) == report.output_frames == frames_out
    assert out == [Fraction(k) / rate_out for k in range(frames_out)]
    assert video_end(tmp_path / "out.mp4") == video_end(src)  # same duration, exactly
    # Only the frames between input times are predicted, each at its exact fraction.
    assert at.times == [float(t) for t in expected_t(src_pts, out)]
    assert (report.factor, report.output_rate, report.input_frames) == (None, rate_out, 12)
    assert leftovers(tmp_path) == []


def test_24_to_60_has_the_two_three_pattern(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, rate=24, audio=False)
    _, at = retime(src, tmp_path / "out.mp4", 60)
    # between 0 and 1/24: 1/60, 2/60 → t = 0.4, 0.8; between 1/24 and 2/24: 3/60, 4/60 → 0.2, 0.6
    assert at.times[:4] == [0.4, 0.8, 0.2, 0.6]
    assert [t.shape[0] for _, _, t in at.calls] == [1] * len(at.times)  # batch_size 1


def test_input_frames_are_kept_bit_exact_where_times_coincide(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=8, rate=24, audio=False)
    retime(src, tmp_path / "out.mkv", 60, lossless=True)
    out = [f.rgb for f in iter_frames(tmp_path / "out.mkv")]
    orig = [f.rgb for f in iter_frames(src)]
    assert len(out) == 20
    for j in range(0, 8, 2):  # j/24 = k/60 for k = 5j/2
        assert np.array_equal(out[5 * j // 2], orig[j])
    assert not any(np.array_equal(out[1], frame) for frame in orig)  # a predicted frame


def test_audio_is_kept_and_in_sync(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=12, rate=25, audio=True)
    report, _ = retime(src, tmp_path / "out.mp4", 60)
    info = probe(tmp_path / "out.mp4")
    assert info.audio_streams == 1 and report.audio_copied == 1

    def audio(path: Path) -> tuple[Fraction, Fraction]:
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            packets = [p for p in c.demux(s) if p.size]
            return packets[0].pts * s.time_base, sum(p.duration for p in packets) * s.time_base

    assert audio(tmp_path / "out.mp4") == audio(src)  # copied packet for packet
    assert video_end(tmp_path / "out.mp4") == video_end(src) == Fraction(12, 25)


# -- variable-rate input --------------------------------------------------------------------------


def test_vfr_input_t_is_exact_fraction_between_real_neighbours(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=10, vfr=True, audio=False)
    src_pts = video_pts(src)
    assert len({b - a for a, b in zip(src_pts, src_pts[1:])}) > 1  # really irregular
    originals = [torch.from_numpy(f.rgb) for f in iter_frames(src)]
    report, at = retime(src, tmp_path / "out.mp4", 30)
    out = video_pts(tmp_path / "out.mp4")
    assert out == [Fraction(k, 30) for k in range(len(out))]
    assert len(out) == math.ceil((video_end(src) - src_pts[0]) * 30)
    assert video_end(tmp_path / "out.mp4") == video_end(src)

    # Each prediction: t = (out_time − t_a) / (t_b − t_a) for the input frames a, b around it.
    seen = []
    for a, b, t in at.calls:
        for x, y, tt in zip(a, b, t.tolist()):
            to8 = (x.permute(1, 2, 0) * 255).round().byte(), (y.permute(1, 2, 0) * 255).round().byte()
            i = next(i for i, o in enumerate(originals) if torch.equal(o, to8[0]))
            assert torch.equal(originals[i + 1], to8[1])  # b is a's successor
            seen.append((i, tt))
    wanted = []
    for s in out:
        if s in src_pts or s >= src_pts[-1]:
            continue
        i = max(j for j, p in enumerate(src_pts) if p < s)
        wanted.append((i, float((s - src_pts[i]) / (src_pts[i + 1] - src_pts[i]))))
    assert seen == wanted and len(wanted) > 5
    assert report.output_rate == 30


# -- cuts, batching, failures -----------------------------------------------------------------------


def test_no_blending_across_a_cut(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=8, rate=24, cut_at=4, audio=False)
    report, at = retime(src, tmp_path / "out.mkv", 60, lossless=True)
    assert report.cuts == 1
    originals = [torch.from_numpy(f.rgb) for f in iter_frames(src)]
    for a, _, _ in at.calls:
        for x in a:
            to8 = (x.permute(1, 2, 0) * 255).round().byte()
            assert not torch.equal(to8, originals[3])  # the pair (3, 4) spans the cut
    out = [f.rgb for f in iter_frames(tmp_path / "out.mkv")]
    # Input j sits at 2.5·j/60: outputs 8 and 9 fall between frames 3 (7.5/60) and 4 (10/60),
    # across the cut, and repeat frame 3; output 10 is frame 4 itself.
    assert np.array_equal(out[8], originals[3].numpy()) and np.array_equal(out[9], originals[3].numpy())
    assert np.array_equal(out[10], originals[4].numpy())
    assert retime(src, tmp_path / "off.mkv", 60, lossless=True, scene_threshold=0)[0].cuts == 0


def test_batches_hold_several_frames_and_give_the_same_output(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=9, rate=24, audio=False)
    _, one = retime(src, tmp_path / "one.mkv", 60, lossless=True)
    _, three = retime(src, tmp_path / "three.mkv", 60, lossless=True, batch_size=3)
    assert max(t.shape[0] for _, _, t in three.calls) == 3
    assert three.times == one.times
    for a, b in zip(iter_frames(tmp_path / "one.mkv"), iter_frames(tmp_path / "three.mkv"), strict=True):
        assert np.array_equal(a.rgb, b.rgb)


def test_failure_leaves_no_output(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=8, rate=24)

    def broken(a, b, t):
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        retime(src, tmp_path / "out.mp4", 60, at=broken)
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_a_rate_no_container_can_store_is_an_output_error(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    with pytest.raises(OutputError, match="simpler fraction"):
        retime(src, tmp_path / "out.mp4", Fraction(2**31 - 1, 2**30 + 1))
    assert leftovers(tmp_path) == []


# -- the command ----------------------------------------------------------------------------------


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def sepconv_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny-sepconv.pt"
    save_weights(build_model("sepconv", TINY_SEPCONV), path)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fps", "fast"], "--fps 'fast' is not a frame rate"),
        (["--fps", "0"], "is not a frame rate"),
        (["--fps", "-24"], "is not a frame rate"),
        (["--fps", "60/0"], "is not a frame rate"),
        (["--fps", "60", "--factor", "4"], "--fps and --factor"),
    ],
    ids=["word", "zero", "negative", "over-zero", "with-factor"],
)
def test_bad_fps_is_a_one_line_usage_error(tmp_path: Path, sepconv_weights: Path, args: list[str], message: str) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    code, output = run("interpolate", src, "-o", tmp_path / "out.mp4", "--weights", sepconv_weights, *args)
    assert code == 2, output
    assert output.startswith("error: ") and message in output and output.count("\n") == 1
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_midpoint_only_model_refuses_other_rates(tmp_path: Path, sepconv_weights: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, rate=25, audio=False)
    code, output = run("interpolate", src, "-o", tmp_path / "out.mp4", "--weights", sepconv_weights, "--fps", "60")
    assert code == 2, output
    assert output == (
        "error: --fps 60: sepconv only predicts midpoints, so it can only make 50, 100, 200 fps "
        "(2, 4 or 8 × the input's 25); use --model flowsep for any rate\n"
    )
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_midpoint_only_model_at_twice_the_rate_is_factor_2(tmp_path: Path, sepconv_weights: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, rate=25, audio=False)
    code, output = run("interpolate", src, "--weights", sepconv_weights, "--fps", "100", "--device", "cpu")
    assert code == 0, output
    out = tmp_path / "in.100fps.mp4"
    assert video_pts(out) == [Fraction(k, 100) for k in range(16)]


@pytest.fixture(scope="module")
def flowsep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder whose flowsep.pt is the untrained network: the DIS-flow baseline."""
    folder = tmp_path_factory.mktemp("flowsep-weights")
    torch.manual_seed(0)
    save_weights(build_model("flowsep"), folder / "flowsep.pt")
    return folder


def test_default_model_is_flowsep_and_takes_ntsc_to_60(
    tmp_path: Path, flowsep_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEPCONV_WEIGHTS_DIR", str(flowsep_dir))
    rate_in = Fraction(30000, 1001)
    src = make_video(tmp_path / "in.mp4", width=96, height=64, frames=6, rate=rate_in, audio=True)
    code, output = run("interpolate", src, "--fps", "60", "--device", "cpu", "--crf", "0")
    assert code == 0, output
    assert "6 → 13 frames" in output and "→ 60 fps" in output
    out = tmp_path / "in.60fps.mp4"
    assert video_pts(out) == [Fraction(k, 60) for k in range(13)]
    assert video_end(out) == video_end(src) == 6 / rate_in
    assert probe(out).audio_streams == 1
    # The untrained network is the optical-flow baseline: frame 1 (t = 1/60 s, so
    # 30000/60060 ≈ 0.4995 of the way from input 0 to 1) is the pan moved by that much.
    # Compared in luma: 4:2:0 output blurs the saturated chroma of any new frame alike.
    def luma_error(image: np.ndarray) -> float:
        inner = (slice(8, -8), slice(8, -8))  # away from the borders the flow cannot see beyond
        luma = np.array([0.299, 0.587, 0.114])
        return float(np.abs((image.astype(float) - truth) @ luma)[inner].mean())

    frames = [f.rgb for f in iter_frames(out)]
    inputs = [f.rgb.astype(float) for f in iter_frames(src)]
    t = float(Fraction(1, 60) * rate_in)
    truth = texture(t, 96, 64).astype(float)
    error = luma_error(frames[1])
    assert error < 0.2 * min(luma_error(inputs[0]), luma_error(inputs[1]))  # measured 0.55 vs 6.1
    assert error < 0.7 * luma_error(inputs[0] * (1 - t) + inputs[1] * t)  # a plain blend: 1.01


def test_help_names_fps_and_the_default_model() -> None:
    code, output = run("interpolate", "--help")
    assert code == 0
    assert "--fps RATE" in output and "[default: flowsep]" in output
