"""``sepconv eval``'s any-time protocol (``video-thirds``) and its default methods.

Videos are the textured pan of ``tests.media`` (2 px right and 1 px down per frame), so
which frame lands where, and at which t, can be checked exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.errors import SepconvError
from sepconv_cli.evaluation import Method, Triplet, build_methods, default_methods, open_benchmark, run_evaluation, write_csv
from sepconv_cli.evaluation.methods import BASELINES, Blend, Duplicate, FlowInterpolation, MInterpolate, ModelMethod
from sepconv_cli.models.registry import build_model, save_weights
from tests.media import decode_rgb, make_video, texture

THIRD, TWO_THIRDS = 1 / 3, 2 / 3


class Recorder(Method):
    """Returns the first frame and records what it was asked for: (first, second, t)."""

    name = "recorder"
    any_time = True

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, float]] = []

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
        self.calls.append((first, second, t))
        return first.copy()


class TwoArguments(Method):
    """A predictor written before t existed: two frames in, the middle one out."""

    name = "old"

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return first.copy()


class MidpointOnly:
    """Stands in for an Interpolator of sepconv or dsepconv."""

    any_time = False

    def midpoint(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a


def lossless_pan(path: Path, frames: int, width: int = 32, height: int = 24) -> Path:
    return make_video(path, width=width, height=height, frames=frames, audio=False, codec="ffv1", pix_fmt="yuv444p")


def index_of(image: np.ndarray, decoded: list[np.ndarray]) -> int:
    matches = [i for i, frame in enumerate(decoded) if np.array_equal(frame, image)]
    assert len(matches) == 1
    return matches[0]


def tiny_flowsep(path: Path) -> Path:
    """An untrained flowsep (it predicts exactly the flow baseline), saved at ``path``."""
    torch.manual_seed(0)
    save_weights(build_model("flowsep", {"channels": [4, 8, 8, 8]}), path)
    return path


# --- the protocol ------------------------------------------------------------------------------


def test_video_thirds_predicts_frames_3k_plus_1_and_2_from_3k_and_3k_plus_3(tmp_path: Path) -> None:
    video = lossless_pan(tmp_path / "pan.mkv", frames=8)  # groups (0, 3) and (3, 6); frame 7 has no partner
    decoded = decode_rgb(video)
    dataset = open_benchmark("video-thirds", [video])
    assert dataset.any_time and dataset.times == (THIRD, TWO_THIRDS)
    assert dataset.triplets == 4
    found = list(dataset.items())
    assert all(isinstance(t, Triplet) for t in found)
    assert [(t.frame, t.t) for t in found] == [("1", THIRD), ("2", TWO_THIRDS), ("4", THIRD), ("5", TWO_THIRDS)]

    recorder = Recorder()
    result = run_evaluation(dataset, [recorder])
    asked = [(index_of(a, decoded), index_of(b, decoded), t) for a, b, t in recorder.calls]
    # The first call is the untimed warm-up, on the first triplet.
    assert asked == [(0, 3, THIRD), (0, 3, THIRD), (0, 3, TWO_THIRDS), (3, 6, THIRD), (3, 6, TWO_THIRDS)]
    # Each prediction is scored against the real frame at its time: the recorder returns
    # the first input, so frame 1 (one step from it) scores above frame 2 (two steps).
    scores = {(f.frame, f.t): f.psnr for f in result.frames}
    assert scores[("1", THIRD)] > scores[("2", TWO_THIRDS)]
    assert [(s.t, s.frames) for s in result.per_time()] == [(THIRD, 2), (TWO_THIRDS, 2)]
    assert result.overall()[0].frames == 4 and result.overall()[0].t is None


def test_midpoint_protocols_still_call_methods_with_two_frames(tmp_path: Path) -> None:
    video = lossless_pan(tmp_path / "pan.mkv", frames=5)
    dataset = open_benchmark("video", [video])
    assert not dataset.any_time and dataset.times == (0.5,)
    recorder = Recorder()
    result = run_evaluation(dataset, [recorder, TwoArguments()])
    assert [t for _, _, t in recorder.calls] == [0.5, 0.5, 0.5]  # the default, not passed (the first: warm-up)
    assert result.methods == ["recorder", "old"] and not result.left_out
    write_csv(result, tmp_path / "frames.csv")
    header = (tmp_path / "frames.csv").read_text().splitlines()[0]
    assert header == "benchmark,sample,frame,method,psnr,ssim,seconds"
    assert all("t" not in s.record() for s in result.per_sample())


# --- methods at t ------------------------------------------------------------------------------


def test_dup_and_blend_at_any_t_and_unchanged_at_the_midpoint() -> None:
    a = np.array([[[0, 30, 255]]], np.uint8)
    b = np.array([[[3, 60, 0]]], np.uint8)
    assert np.array_equal(Duplicate()(a, b, THIRD), a) and np.array_equal(Duplicate()(a, b, 0.5), a)
    assert np.array_equal(Duplicate()(a, b, TWO_THIRDS), b)
    assert Blend()(a, b, THIRD).tolist() == [[[1, 40, 170]]]
    assert Blend()(a, b, TWO_THIRDS).tolist() == [[[2, 50, 85]]]
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    old = np.clip(np.rint((x.astype(np.float32) + y.astype(np.float32)) / 2), 0, 255).astype(np.uint8)
    assert np.array_equal(Blend()(x, y), old)


def test_flow_at_a_third_follows_the_pan_and_beats_blend(tmp_path: Path) -> None:
    a, b = texture(0, 96, 64), texture(3, 96, 64)  # 6 px right and 3 down between the inputs
    for t, k in ((THIRD, 1), (TWO_THIRDS, 2)):
        truth = texture(k, 96, 64).astype(float)
        flow = np.mean((FlowInterpolation()(a, b, t) - truth) ** 2)
        assert flow < 0.1 * np.mean((Blend()(a, b, t) - truth) ** 2)
        assert flow < np.mean((FlowInterpolation()(a, b, 1 - t) - truth) ** 2)  # the right t, not the other
    video = make_video(tmp_path / "pan.mp4", width=64, height=48, frames=7, audio=False)
    result = run_evaluation(open_benchmark("video-thirds", [video]), [Blend(), FlowInterpolation()])
    psnr = {(s.method, s.t): s.psnr for s in result.per_time()}
    for t in (THIRD, TWO_THIRDS):
        assert psnr[("flow", t)] > psnr[("blend", t)] + 3


def test_minterpolate_at_thirds_keeps_the_output_at_that_time() -> None:
    a, b = texture(0, 64, 48), texture(3, 64, 48)

    class BlendingFilter(MInterpolate):
        OPTIONS = "fps=2:mi_mode=blend:scd=none"  # no motion: shows the filter's weights

    for t in (THIRD, TWO_THIRDS):
        weighted = (1 - t) * a.astype(float) + t * b.astype(float)
        assert np.abs(BlendingFilter()(a, b, t) - weighted).max() <= 1
    # With motion compensation, each output is nearest the real frame at its time.
    for t, k in ((THIRD, 1), (TWO_THIRDS, 2)):
        errors = [np.mean((MInterpolate()(a, b, t) - texture(i, 64, 48).astype(float)) ** 2) for i in range(4)]
        assert int(np.argmin(errors)) == k
    assert MInterpolate().options(0.5) == ("fps=2:mi_mode=mci:scd=none", 1 / 2)
    with pytest.raises(ValueError, match="k/n"):
        MInterpolate()(a, b, 0.123456)


def test_flowsep_predicts_at_thirds_and_untrained_equals_the_flow_baseline(tmp_path: Path) -> None:
    methods = build_methods(["flow"], weights=[tiny_flowsep(tmp_path / "flowsep.pt")], device="cpu")
    assert [m.name for m in methods] == ["flow", "flowsep"] and methods[1].any_time
    a, b = texture(0, 64, 48), texture(3, 64, 48)
    assert np.array_equal(methods[1](a, b, THIRD), methods[0](a, b, THIRD))


# --- midpoint-only models ----------------------------------------------------------------------


def test_midpoint_only_models_are_left_out_of_the_any_t_protocol_with_a_note(tmp_path: Path) -> None:
    video = lossless_pan(tmp_path / "pan.mkv", frames=4)
    dataset = open_benchmark("video-thirds", [video])
    model = ModelMethod("sepconv", MidpointOnly())
    assert not model.any_time
    result = run_evaluation(dataset, [Blend(), model])
    assert result.methods == ["blend"]
    assert result.left_out == ["sepconv skipped: it predicts only midpoints (t = 1/2), and video-thirds asks for "
                               "t = 1/3 and 2/3"]
    with pytest.raises(SepconvError, match="no method left to score on video-thirds: sepconv skipped"):
        run_evaluation(dataset, [model])
    # On a midpoint benchmark it takes part.
    assert run_evaluation(open_benchmark("video", [video]), [model]).methods == ["sepconv"]


def test_cli_skips_a_midpoint_model_with_a_one_line_note(tmp_path: Path, tiny_sepconv: torch.nn.Module) -> None:
    video = lossless_pan(tmp_path / "pan.mkv", frames=7)
    save_weights(tiny_sepconv, tmp_path / "tiny.pt")
    args = ["eval", "-b", "video-thirds", "-d", str(video), "-m", "blend", "-m", "flow", "-w", str(tmp_path / "tiny.pt"),
            "--device", "cpu", "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    notes = [line for line in run.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: sepconv skipped: it predicts only midpoints (t = 1/2), and video-thirds asks for t = 1/3 and 2/3"]
    assert "sepconv" not in run.stdout
    assert "video-thirds: 4 frame(s), 1 sample(s)" in run.stdout
    # Rows as the clip finishes, one per method and t; the table per t, then over both.
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("pan.mkv ")]
    assert [(r[1], r[2], r[3]) for r in rows] == [("blend", "t=1/3", "2"), ("flow", "t=1/3", "2"),
                                                  ("blend", "t=2/3", "2"), ("flow", "t=2/3", "2")]
    table = [line for line in run.stdout.splitlines() if line.startswith("│ ") and ("blend" in line or "flow" in line)]
    assert [line.split("│")[2].strip() for line in table] == ["1/3", "1/3", "2/3", "2/3", "all", "all"]
    assert "frames scored" in run.stderr  # the progress counts frames, two per pair of inputs
    records = json.loads((tmp_path / "s.json").read_text())
    assert [(r["method"], r["t"], r["frames"]) for r in records] == [
        ("blend", THIRD, 2), ("flow", THIRD, 2), ("blend", TWO_THIRDS, 2), ("flow", TWO_THIRDS, 2)]
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [(r["frame"], r["method"], r["t"]) for r in rows[:2]] == [("1", "blend", "0.333333"), ("1", "flow", "0.333333")]
    only = CliRunner().invoke(cli, ["eval", "-b", "video-thirds", "-d", str(video), "-w", str(tmp_path / "tiny.pt"),
                                    "-m", "sepconv", "--device", "cpu"])
    assert only.exit_code == 1
    assert only.stderr.strip().splitlines() == ["error: no method left to score on video-thirds: sepconv skipped: it predicts "
                                                "only midpoints (t = 1/2), and video-thirds asks for t = 1/3 and 2/3"]


# --- default methods ---------------------------------------------------------------------------


def test_default_methods_add_flowsep_only_when_its_weights_ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEPCONV_WEIGHTS_DIR", str(tmp_path))
    names, note = default_methods()
    assert names == list(BASELINES) and note is not None
    assert note.startswith("flowsep skipped: no default weights ship") and "\n" not in note
    tiny_flowsep(tmp_path / "flowsep.pt")
    assert default_methods() == ([*BASELINES, "flowsep"], None)


def test_cli_default_methods_with_and_without_flowsep_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 48x32: FFmpeg's minterpolate refuses frames of 24 rows.
    video = make_video(tmp_path / "pan.mp4", width=48, height=32, frames=4, audio=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("SEPCONV_WEIGHTS_DIR", str(weights))
    base = ["eval", "-b", "video-thirds", "-d", str(video), "--device", "cpu", "--json"]

    run = CliRunner().invoke(cli, [*base, str(tmp_path / "without.json")])
    assert run.exit_code == 0, run.output
    notes = [line for line in run.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: flowsep skipped: no default weights ship")
    methods = [r["method"] for r in json.loads((tmp_path / "without.json").read_text())]
    assert list(dict.fromkeys(methods)) == list(BASELINES)

    # Named explicitly, missing weights stay an error (exit 5).
    explicit = CliRunner().invoke(cli, ["eval", "-b", "video", "-d", str(video), "-m", "flowsep", "--device", "cpu"])
    assert explicit.exit_code == 5 and "no default weights for 'flowsep'" in explicit.stderr

    # A --weights file for flowsep makes the note moot.
    own = tiny_flowsep(tmp_path / "own.pt")
    run = CliRunner().invoke(cli, [*base, str(tmp_path / "own.json"), "-w", str(own)])
    assert run.exit_code == 0, run.output
    assert "note:" not in run.stderr

    tiny_flowsep(weights / "flowsep.pt")
    run = CliRunner().invoke(cli, [*base, str(tmp_path / "with.json")])
    assert run.exit_code == 0, run.output
    assert "note:" not in run.stderr
    records = json.loads((tmp_path / "with.json").read_text())
    assert list(dict.fromkeys(r["method"] for r in records)) == [*BASELINES, "flowsep"]
    flowsep = {r["t"]: r["psnr"] for r in records if r["method"] == "flowsep"}
    flow = {r["t"]: r["psnr"] for r in records if r["method"] == "flow"}
    assert flowsep == pytest.approx(flow, abs=0.01)  # untrained, it is the flow baseline
