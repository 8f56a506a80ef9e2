"""``sepconv eval``: dataset layouts, protocols, baselines, self-ensembling, outputs, CLI.

Every dataset is a few tiny frames written in ``tmp_path`` in the benchmark's own
layout; frames are the textured pan of ``tests.media`` so that which frame lands where
can be checked exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.errors import InputError, WeightsError
from sepconv_cli.evaluation import (
    Skip,
    Triplet,
    build_methods,
    open_benchmark,
    run_evaluation,
    write_csv,
    write_json,
    write_report,
)
from sepconv_cli.evaluation.methods import Blend, Duplicate, FlowInterpolation, MInterpolate, ModelMethod, dihedral
from sepconv_cli.models.registry import save_weights
from tests.media import decode_rgb, make_video, texture

W, H = 24, 16  # just above the 11-px SSIM window


def write_png(path: Path, index: int, suffix: str = ".png") -> np.ndarray:
    """Frame ``index`` of the pan, written as an image; returns the RGB that was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = texture(index, W, H)
    cv2.imwrite(str(path.with_suffix(suffix)), rgb[:, :, ::-1])
    return rgb


def triplets(dataset) -> tuple[list[Triplet], list[Skip]]:  # noqa: ANN001
    items = list(dataset.items())
    return [i for i in items if isinstance(i, Triplet)], [i for i in items if isinstance(i, Skip)]


# --- layouts -----------------------------------------------------------------------------------


def test_middlebury_layout_finds_every_sequence_and_skips_a_missing_file(tmp_path: Path) -> None:
    for k, seq in enumerate(["Beanbags", "Grove2", "Grove10"]):
        write_png(tmp_path / "other-data" / seq / "frame10.png", 10 * k)
        write_png(tmp_path / "other-data" / seq / "frame11.png", 10 * k + 2)
        if seq != "Grove2":
            write_png(tmp_path / "other-gt-interp" / seq / "frame10i11.png", 10 * k + 1)
    dataset = open_benchmark("middlebury", [tmp_path])
    assert [s.name for s in dataset.samples] == ["Beanbags", "Grove2", "Grove10"]  # natural order
    found, skipped = triplets(dataset)
    assert [(t.sample, t.frame) for t in found] == [("Beanbags", "frame10i11"), ("Grove10", "frame10i11")]
    assert np.array_equal(found[1].first, texture(20, W, H)) and np.array_equal(found[1].truth, texture(21, W, H))
    assert np.array_equal(found[1].second, texture(22, W, H))
    assert skipped == [Skip("Grove2", "missing frame10i11.png")]


def test_vimeo90k_layout_follows_the_test_list(tmp_path: Path) -> None:
    listed = ["00001/0001", "00001/0002", "00002/0010"]
    (tmp_path / "tri_testlist.txt").write_text("\n".join(listed) + "\n\n")
    for k, name in enumerate(listed[:2] + ["00003/0001"]):  # 00002/0010 missing, 00003 not listed
        for i in (1, 2, 3):
            write_png(tmp_path / "sequences" / name / f"im{i}.png", 5 * k + i)
    dataset = open_benchmark("vimeo90k", [tmp_path])
    assert [s.name for s in dataset.samples] == listed
    found, skipped = triplets(dataset)
    assert [t.sample for t in found] == listed[:2]
    assert np.array_equal(found[1].truth, texture(7, W, H)) and np.array_equal(found[1].second, texture(8, W, H))
    assert [s.sample for s in skipped] == ["00002/0010"]


def test_ucf101_dvf_layout(tmp_path: Path) -> None:
    for k in range(3):
        folder = tmp_path / str(k + 1)
        write_png(folder / "frame_00.png", 3 * k)
        write_png(folder / "frame_01_gt.png", 3 * k + 1)
        if k != 1:
            write_png(folder / "frame_02.png", 3 * k + 2)
    (tmp_path / "frame_00.png").write_bytes(b"")  # a stray file is not a sample
    dataset = open_benchmark("ucf101", [tmp_path])
    found, skipped = triplets(dataset)
    assert [t.sample for t in found] == ["1", "3"]
    assert np.array_equal(found[1].truth, texture(7, W, H))
    assert skipped == [Skip("2", "missing frame_02.png")]


def test_davis_layout_predicts_every_inner_frame(tmp_path: Path) -> None:
    frames = tmp_path / "JPEGImages" / "480p"
    for i in range(5):
        write_png(frames / "bear" / f"{i:05d}.png", i, suffix=".jpg")
    for i in range(4):
        write_png(frames / "car" / f"{i:05d}.png", 10 + i, suffix=".jpg")
    write_png(frames / "dog" / "00000.png", 0, suffix=".jpg")
    (frames / "car" / "00002.jpg").write_bytes(b"not a jpeg")
    dataset = open_benchmark("davis", [tmp_path])
    assert dataset.triplets == 3 + 2 + 0
    found, skipped = triplets(dataset)
    assert [(t.sample, t.frame) for t in found] == [("bear", "00001"), ("bear", "00002"), ("bear", "00003")]
    # JPEG is lossy: the middle frame is the middle file, not its neighbours.
    assert np.abs(found[1].truth.astype(int) - texture(2, W, H)).mean() < 3
    assert np.abs(found[1].first.astype(int) - texture(1, W, H)).mean() < 3
    assert {s.sample for s in skipped} == {"car", "dog"} and len(skipped) == 3
    # Pointing at the 480p folder itself works too.
    assert [s.name for s in open_benchmark("davis", [frames]).samples] == ["bear", "car", "dog"]


def test_video_benchmark_predicts_odd_frames_from_even_neighbours(tmp_path: Path) -> None:
    video = make_video(tmp_path / "pan.mkv", width=32, height=24, frames=8, audio=False, codec="ffv1", pix_fmt="yuv444p")
    decoded = decode_rgb(video)
    dataset = open_benchmark("video", [video])
    assert dataset.triplets == 3
    found, skipped = triplets(dataset)
    assert not skipped
    assert [t.frame for t in found] == ["1", "3", "5"]  # frame 7 has no even successor
    for t, middle in zip(found, (1, 3, 5)):
        assert np.array_equal(t.first, decoded[middle - 1])
        assert np.array_equal(t.truth, decoded[middle])
        assert np.array_equal(t.second, decoded[middle + 1])


def test_video_folders_and_unreadable_files(tmp_path: Path) -> None:
    make_video(tmp_path / "a.mp4", frames=5, audio=False)
    make_video(tmp_path / "b.mp4", frames=3, audio=False)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "notes.txt").write_text("not a video")
    dataset = open_benchmark("video", [tmp_path])
    assert [s.name for s in dataset.samples] == ["a.mp4", "b.mp4", "broken.mp4"]
    found, skipped = triplets(dataset)
    assert [(t.sample, t.frame) for t in found] == [("a.mp4", "1"), ("a.mp4", "3"), ("b.mp4", "1")]
    assert [s.sample for s in skipped] == ["broken.mp4"]
    with pytest.raises(InputError, match="not a video"):
        open_benchmark("video", [tmp_path / "broken.mp4"])  # named on its own, it is an error


def test_seeyouagain_protocol_960x540_one_triplet_every_30_frames(tmp_path: Path) -> None:
    video = make_video(tmp_path / "see-you-again.mkv", width=48, height=32, frames=64, audio=False,
                       codec="ffv1", pix_fmt="yuv444p")
    decoded = decode_rgb(video)
    dataset = open_benchmark("seeyouagain", [tmp_path])
    assert dataset.triplets == 3
    found, _ = triplets(dataset)
    assert [t.frame for t in found] == ["1", "31", "61"]
    for t in found:
        assert t.first.shape == t.truth.shape == t.second.shape == (540, 960, 3)
    middle = int(found[1].frame)
    for image, index in ((found[1].first, middle - 1), (found[1].truth, middle), (found[1].second, middle + 1)):
        expected = cv2.resize(decoded[index], (960, 540), interpolation=cv2.INTER_CUBIC)
        assert np.array_equal(image, expected)


def test_missing_data_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEPCONV_DATA", raising=False)
    with pytest.raises(InputError, match=r"no seeyouagain data at data/seeyouagain: put the 'See You Again'"):
        open_benchmark("seeyouagain")
    monkeypatch.setenv("SEPCONV_DATA", str(tmp_path / "datasets"))
    with pytest.raises(InputError, match=r"datasets/middlebury: .*other-gt-interp.*SEPCONV_DATA") as error:
        open_benchmark("middlebury")
    assert "\n" not in str(error.value)
    (tmp_path / "datasets" / "vimeo90k").mkdir(parents=True)
    with pytest.raises(InputError, match="no tri_testlist.txt"):
        open_benchmark("vimeo90k")
    (tmp_path / "datasets" / "ucf101").mkdir()
    with pytest.raises(InputError, match="found no ucf101 samples"):
        open_benchmark("ucf101")
    with pytest.raises(InputError, match=r"^--data .*nowhere does not exist$"):
        open_benchmark("davis", [tmp_path / "nowhere"])
    with pytest.raises(InputError, match="reads one folder"):
        open_benchmark("davis", [tmp_path, tmp_path])


# --- methods -----------------------------------------------------------------------------------


def test_simple_baselines_exactly() -> None:
    a = np.array([[[0, 10, 255]]], np.uint8)
    b = np.array([[[1, 13, 255]]], np.uint8)
    assert np.array_equal(Duplicate()(a, b), a)
    assert Blend()(a, b).tolist() == [[[0, 12, 255]]]  # 0.5 and 11.5 round half to even


def test_minterpolate_is_lossless_on_a_still_and_follows_motion() -> None:
    a, truth, b = (texture(i, 64, 48) for i in (0, 2, 4))
    assert np.array_equal(MInterpolate()(a, a), a)  # no colour conversion on the way
    error = np.mean((MInterpolate()(a, b) - truth.astype(float)) ** 2)
    assert error < 0.5 * np.mean((Blend()(a, b) - truth.astype(float)) ** 2)


def test_flow_follows_a_pan_and_weights_occluded_edges_to_the_frame_that_sees_them() -> None:
    a, truth, b = (texture(i, 128, 96) for i in (0, 2, 4))  # 8 px right, 4 down between inputs
    error = np.abs(FlowInterpolation()(a, b).astype(int) - truth).max(axis=2)
    assert error[8:-8, 8:-8].mean() < 0.05
    # The middle frame's left and top edges are outside the first frame; an equal blend
    # of both warped frames there errs by 8.5 and 5.1 levels on average.
    assert error[:, :4].mean() < 7 and error[:2].mean() < 3.5


def test_synthetic_pan_scores_flow_above_blend_above_dup(tmp_path: Path) -> None:
    video = make_video(tmp_path / "pan.mp4", width=64, height=48, frames=9, audio=False)
    methods = build_methods(["dup", "blend", "flow", "minterpolate"])
    result = run_evaluation(open_benchmark("video", [video]), methods)
    psnr = {s.method: s.psnr for s in result.overall()}
    assert psnr["flow"] > psnr["blend"] + 3 > psnr["dup"] + 6
    assert psnr["minterpolate"] > psnr["blend"] + 3
    assert all(s.frames == 4 for s in result.overall())
    # Every method saw exactly the same frames.
    keys = {m: [(f.sample, f.frame) for f in result.frames if f.method == m] for m in psnr}
    assert len({tuple(v) for v in keys.values()}) == 1


class FakeInterpolator:
    """Returns ``frame1`` (or a fixed function of the inputs) and counts calls."""

    def __init__(self, rule=lambda a, b: a) -> None:  # noqa: ANN001
        self.rule, self.calls = rule, []

    def midpoint(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(a.shape))
        return self.rule(a, b).float()


def test_dihedral_transforms_are_distinct_and_invertible() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    images = [dihedral(x, i) for i in range(8)]
    assert len({tuple(t.flatten().tolist()) for t in images}) == 8
    for i, t in enumerate(images):
        assert torch.equal(dihedral(t, i, inverse=True), x)


def test_tta_undoes_each_transform_and_batches_by_shape() -> None:
    a, b = texture(0, 20, 12), texture(2, 20, 12)
    fake = FakeInterpolator()
    method = ModelMethod("fake+tta", fake, tta=True)
    # A predictor that is not flip/rotation-invariant still comes out unchanged when
    # every prediction is turned back before averaging.
    assert np.array_equal(method(a, b), a)
    assert fake.calls == [(4, 3, 12, 20), (4, 3, 20, 12)]
    # Something that does depend on orientation is averaged: x-gradient bias cancels.
    ramp = ModelMethod("ramp", FakeInterpolator(lambda a, b: a * 0 + torch.linspace(0, 1, a.shape[-1])), tta=True)
    assert np.ptp(ramp(a, b)) <= 1  # the 8 orientations of a ramp average to flat grey


def test_model_method_from_a_weights_file(tmp_path: Path, tiny_sepconv: torch.nn.Module,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    save_weights(tiny_sepconv, tmp_path / "tiny.pt")
    methods = build_methods(["blend"], weights=[tmp_path / "tiny.pt"], device="cpu")
    assert [m.name for m in methods] == ["blend", "sepconv"]
    a, b = texture(0, 40, 24), texture(2, 40, 24)
    prediction = methods[1](a, b)
    assert prediction.dtype == np.uint8 and prediction.shape == a.shape
    with_tta = build_methods(["sepconv"], weights=[tmp_path / "tiny.pt"], tta=True, device="cpu")
    assert [m.name for m in with_tta] == ["sepconv+tta"]
    monkeypatch.setenv("SEPCONV_WEIGHTS_DIR", str(tmp_path / "none"))
    with pytest.raises(WeightsError, match="no default weights for 'sepconv'"):
        build_methods(["sepconv"])


# --- outputs -----------------------------------------------------------------------------------


def test_json_csv_and_report(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    make_video(tmp_path / "v" / "one.mp4", frames=7, audio=False)
    make_video(tmp_path / "v" / "two.mp4", frames=5, audio=False)
    result = run_evaluation(open_benchmark("video", [tmp_path / "v"]), [Duplicate(), Blend()], keep_worst=2, limit=4)
    write_json(result, tmp_path / "out" / "scores.json")
    records = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [(r["sample"], r["method"], r["frames"]) for r in records] == [
        ("one.mp4", "dup", 3), ("one.mp4", "blend", 3), ("two.mp4", "dup", 1), ("two.mp4", "blend", 1),
    ]
    for r in records:
        assert set(r) == {"benchmark", "sample", "method", "psnr", "ssim", "frames", "seconds"}
        assert r["benchmark"] == "video" and 0 < r["ssim"] <= 1 and 10 < r["psnr"] < 60 and r["seconds"] >= 0
    # The overall score is the frame-weighted mean of the records.
    blend = [r for r in records if r["method"] == "blend"]
    overall = next(s for s in result.overall() if s.method == "blend")
    assert overall.psnr == pytest.approx(sum(r["psnr"] * r["frames"] for r in blend) / 4)

    write_csv(result, tmp_path / "frames.csv")
    rows = list(csv.DictReader((tmp_path / "frames.csv").open()))
    assert len(rows) == 8 and rows[0]["frame"] == "1" and rows[0]["method"] == "dup"
    mean = np.mean([float(r["psnr"]) for r in rows if r["method"] == "blend" and r["sample"] == "one.mp4"])
    assert mean == pytest.approx(blend[0]["psnr"], abs=1e-3)

    files = write_report(result, tmp_path / "report")
    assert (tmp_path / "report" / "psnr.png") in files
    worst = sorted((tmp_path / "report" / "dup").glob("worst-*.png"))
    assert len(worst) == 2
    lowest = min((f for f in result.frames if f.method == "dup"), key=lambda f: f.psnr)
    assert worst[0].name == f"worst-1-{lowest.sample}-{lowest.frame}.png"
    assert cv2.imread(str(worst[0])).shape[1] > 3 * 64  # prediction | truth | error
    assert cv2.imread(str(tmp_path / "report" / "psnr.png")) is not None


def test_limit_and_progress_callback(tmp_path: Path) -> None:
    video = make_video(tmp_path / "pan.mp4", frames=11, audio=False)
    seen = []
    result = run_evaluation(open_benchmark("video", [video]), [Duplicate()], limit=2,
                            progress=lambda done, total: seen.append((done, total)))
    assert result.triplets == 2 and seen == [(0, 2), (1, 2), (2, 2)]


def test_seconds_per_frame_time_warm_calls_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's first call (allocations, a kernel build) took 4.8 s against 0.3 s warm; only
    warm calls may count. Measured on a fake clock that each call advances."""
    import time

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    class SlowStart(Duplicate):
        name = "slow-start"
        calls = 0

        def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
            clock[0] += 10.0 if self.calls == 0 else 0.25
            self.calls += 1
            return super().__call__(first, second, t)

    video = make_video(tmp_path / "pan.mp4", frames=9, audio=False)  # 4 triplets
    method = SlowStart()
    result = run_evaluation(open_benchmark("video", [video]), [method, Blend()])
    timed = [f.seconds for f in result.frames if f.method == "slow-start"]
    assert timed == [0.25] * 4 and method.calls == 5  # one untimed warm-up call
    assert [f.psnr for f in result.frames if f.method == "slow-start"] == [
        f.psnr for f in run_evaluation(open_benchmark("video", [video]), [Duplicate()]).frames
    ]  # the scores are the warm call's, the same as ever


def test_nothing_readable_is_an_input_error(tmp_path: Path) -> None:
    write_png(tmp_path / "1" / "frame_00.png", 0)
    with pytest.raises(InputError, match=r"no ucf101 triplet could be scored \(1 skipped\)"):
        run_evaluation(open_benchmark("ucf101", [tmp_path]), [Duplicate()])


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_scores_a_video_and_writes_everything(tmp_path: Path, tiny_sepconv: torch.nn.Module) -> None:
    video = make_video(tmp_path / "pan.mp4", width=48, height=32, frames=7, audio=False)
    save_weights(tiny_sepconv, tmp_path / "tiny.pt")
    args = ["eval", "--benchmark", "video", "--data", str(video), "--method", "dup", "--method", "flow",
            "--weights", str(tmp_path / "tiny.pt"), "--tta", "--device", "cpu", "--limit", "2",
            "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv"), "--report", str(tmp_path / "r")]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert "video: 2 frame(s), 1 sample(s)" in run.output
    for name in ("dup", "flow", "sepconv+tta"):
        assert name in run.output
    records = json.loads((tmp_path / "s.json").read_text())
    assert [r["method"] for r in records] == ["dup", "flow", "sepconv+tta"] and {r["frames"] for r in records} == {2}
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 2 * 3
    assert (tmp_path / "r" / "psnr.png").is_file()
    for name in ("dup", "flow", "sepconv+tta"):
        assert len(list((tmp_path / "r" / name).glob("worst-*-pan.mp4-*.png"))) == 2


def test_cli_per_sample_table_and_skips(tmp_path: Path) -> None:
    for k in range(2):
        folder = tmp_path / f"seq{k}"
        for i, name in enumerate(("frame_00", "frame_01_gt", "frame_02")):
            write_png(folder / f"{name}.png", 3 * k + i)
    (tmp_path / "seq9").mkdir()
    run = CliRunner().invoke(cli, ["eval", "-b", "ucf101", "-d", str(tmp_path), "-m", "dup", "-m", "blend"])
    assert run.exit_code == 0, run.output
    assert "per sample" in run.output and "seq0" in run.output and "seq1" in run.output
    assert "skipped 1 unreadable sample(s) or triplet(s), e.g. seq9: missing frame_00.png" in run.output


def test_cli_missing_data_is_one_line_with_exit_code_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEPCONV_DATA", str(tmp_path))
    run = CliRunner().invoke(cli, ["eval", "--benchmark", "seeyouagain"])
    assert run.exit_code == 3
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no seeyouagain data at {tmp_path / 'seeyouagain'}")
    run = CliRunner().invoke(cli, ["eval", "--benchmark", "nope"])
    assert run.exit_code == 2


# --- progress while scoring ----------------------------------------------------------------------


def test_steps_name_clip_and_method_and_each_clip_is_reported_when_done(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    make_video(tmp_path / "v" / "one.mp4", frames=7, audio=False)  # 3 triplets
    make_video(tmp_path / "v" / "two.mp4", frames=5, audio=False)  # 2
    events: list[tuple] = []
    reported = []

    def sample_done(scores: list) -> None:
        reported.extend(scores)
        events.append(("sample", [(s.sample, s.method, s.frames) for s in scores]))

    result = run_evaluation(
        open_benchmark("video", [tmp_path / "v"]), [Duplicate(), Blend()], limit=4,
        on_step=lambda s: events.append(("step", s.sample, s.number, s.samples, s.method, s.done, s.total,
                                         s.overall_done, s.overall_total)),
        on_sample=sample_done,
    )
    steps = [e for e in events if e[0] == "step"]
    assert steps[:3] == [("step", "one.mp4", 1, 2, "dup", 0, 3, 0, 4), ("step", "one.mp4", 1, 2, "blend", 0, 3, 0, 4),
                         ("step", "one.mp4", 1, 2, "dup", 1, 3, 1, 4)]
    # The limit leaves one triplet of the second clip, and its total says so.
    assert steps[-1] == ("step", "two.mp4", 2, 2, "blend", 0, 1, 3, 4)
    samples = [i for i, e in enumerate(events) if e[0] == "sample"]
    assert events[samples[0]] == ("sample", [("one.mp4", "dup", 3), ("one.mp4", "blend", 3)])
    assert events[samples[1]] == ("sample", [("two.mp4", "dup", 1), ("two.mp4", "blend", 1)])
    # The first clip is reported before the second one starts, and its scores are final.
    assert events[samples[0] + 1][:2] == ("step", "two.mp4")
    assert reported == result.per_sample()


def test_progress_lines_come_at_milestones_and_at_least_every_30_s() -> None:
    from sepconv_cli.commands.progress import ScoringLines
    from sepconv_cli.evaluation.runner import Step

    now = [0.0]
    lines: list[str] = []
    shown = ScoringLines("eval video", lines.append, clock=lambda: now[0])

    def at(t: float, done: int, method: str = "flow", sample: str = "a.mp4", total: int | None = 40) -> None:
        now[0] = t
        shown.step(Step(sample, 1 if sample == "a.mp4" else 2, 2, method, done, total, done, None))

    at(0, 0, "dup")  # the first one always
    at(1, 0)         # same milestone, but the first triplet's next method (its warm-up)
    at(1.5, 0)       # the same method again: nothing new
    at(2, 4)         # a new tenth, but too soon after the last line
    at(6, 5)         # still that tenth, now due
    at(7, 8)         # a new tenth, too soon
    at(12, 8)        # due
    at(20, 9)        # nothing new
    at(42.5, 9)      # 30 s without a line
    at(50, 0, sample="b.mp4", total=None)  # a new clip, total unknown
    assert [line.split(" [")[0] for line in lines] == [
        "eval video: a.mp4 (1/2): 0/40 (0%) triplets scored, now dup; all clips 0",
        "eval video: a.mp4 (1/2): 0/40 (0%) triplets scored, now flow; all clips 0",
        "eval video: a.mp4 (1/2): 5/40 (12%) triplets scored, now flow; all clips 5",
        "eval video: a.mp4 (1/2): 8/40 (20%) triplets scored, now flow; all clips 8",
        "eval video: a.mp4 (1/2): 9/40 (22%) triplets scored, now flow; all clips 9",
        "eval video: b.mp4 (2/2): 0 triplets scored, now flow; all clips 0",
    ]
    assert lines[-1].endswith("[50 s]")


def test_cli_prints_each_clip_when_done_and_progress_lines_on_a_non_terminal(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    make_video(tmp_path / "v" / "one.mp4", width=32, height=24, frames=7, audio=False)
    make_video(tmp_path / "v" / "two.mp4", width=32, height=24, frames=5, audio=False)
    run = CliRunner().invoke(cli, ["eval", "-b", "video", "-d", str(tmp_path / "v"), "-m", "dup", "-m", "blend"])
    assert run.exit_code == 0, run.output
    out = run.stdout.splitlines()
    rows = [line.split() for line in out if line.startswith(("one.mp4 ", "two.mp4 "))]
    assert [(r[0], r[1], r[2]) for r in rows] == [("one.mp4", "dup", "3"), ("one.mp4", "blend", "3"),
                                                  ("two.mp4", "dup", "2"), ("two.mp4", "blend", "2")]
    assert all("PSNR" in r and "SSIM" in r and "ms/frame" in r for r in rows)
    # Rows come as clips finish, before the final tables.
    title = next(i for i, line in enumerate(out) if "video: 5 frame(s), 2 sample(s)" in line)
    assert max(i for i, line in enumerate(out) if line.startswith(("one.mp4 ", "two.mp4 "))) < title
    # CliRunner's stderr is not a terminal: plain progress lines, not a bar.
    assert "eval video: one.mp4 (1/2): 0/3 (0%) triplets scored, now dup; all clips 0/5 (0%)" in run.stderr
    assert "\x1b[" not in run.stderr and "━" not in run.stderr
    quiet = CliRunner().invoke(cli, ["eval", "-b", "video", "-d", str(tmp_path / "v"), "-m", "dup", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
