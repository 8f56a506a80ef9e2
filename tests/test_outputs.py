"""The core of a run without the command line: what SOURCE... and --out name (``outputs``)
and how a batch of jobs runs (``runs``), called directly, without click."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sepconv_cli.errors import InputError, ModelUsageError, OutputError, UsageError, WeightsError
from sepconv_cli.outputs import (default_output, expand_sources, make_folders, plan_outputs, remove_empty,
                                 resolve_output, resolve_source)
from sepconv_cli.pipeline import VideoOptions
from sepconv_cli.runs import RunSettings, check_rate, estimate_frames, run_batch
from sepconv_cli.sequences import ImageSequence
from sepconv_cli.sinks import check_paths
from sepconv_cli.video import Pipe


def frames(folder: Path, count: int = 3, suffix: str = ".png") -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        cv2.imwrite(str(folder / f"{index:06d}{suffix}"), np.full((8, 8, 3), index * 40, np.uint8))
    return folder


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really a video")
    return path


def settings(fps: Fraction | None = None, factor: int = 2) -> RunSettings:
    return RunSettings(fps=fps, factor=factor, dedup=None, input_fps_given=False, options=VideoOptions(factor=factor))


# What --out names.

def test_out_names_a_file_a_folder_or_a_pattern(tmp_path: Path) -> None:
    assert resolve_output(str(tmp_path / "done.mp4")) == tmp_path / "done.mp4"
    folder = resolve_output(str(tmp_path / "done") + "/")
    assert isinstance(folder, ImageSequence) and folder.folder == tmp_path / "done"
    assert isinstance(resolve_output(str(tmp_path / "noext")), ImageSequence)
    pattern = resolve_output(str(tmp_path / "frames" / "%04d.png"))
    assert isinstance(pattern, ImageSequence) and pattern.pattern == "%04d.png"


def test_out_naming_one_image_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="for image frames give a pattern such as") as error:
        resolve_output(str(tmp_path / "frame.png"))
    assert error.value.exit_code == 2


# Default outputs, beside the input.

def test_a_video_is_named_by_its_factor_or_rate(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mov"
    assert default_output(clip, 2, False) == tmp_path / "clip.2x.mov"
    assert default_output(clip, 4, True) == tmp_path / "clip.4x.mkv"
    assert default_output(clip, 2, False, Fraction(60000, 1001)) == tmp_path / "clip.59.94fps.mov"


def test_a_frame_folder_gives_a_frame_folder_beside_it(tmp_path: Path) -> None:
    shot = resolve_source(str(frames(tmp_path / "shot")), Fraction(24))
    assert isinstance(shot, ImageSequence)
    out = default_output(shot, 2, False)
    assert isinstance(out, ImageSequence)
    assert out.folder == (tmp_path / "shot.2x").resolve() and out.pattern == "%06d.png"
    # JPEG frames come out as PNG, not compressed a second time.
    jpegs = ImageSequence(frames(tmp_path / "jpegs", suffix=".jpg"), None)
    assert default_output(jpegs, 2, False).pattern == "%06d.png"


# A batch: several inputs, one output each.

def test_a_batch_goes_into_the_out_folder(tmp_path: Path) -> None:
    inputs = [touch(tmp_path / "in" / "a.mp4"), touch(tmp_path / "in" / "b.mkv")]
    jobs = plan_outputs(inputs, str(tmp_path / "done") + "/", True, 2, False, None, None)
    assert jobs == [(inputs[0], tmp_path / "done" / "a.2x.mp4"), (inputs[1], tmp_path / "done" / "b.2x.mkv")]
    beside = plan_outputs(inputs, None, True, 4, False, None, None)
    assert [dst for _, dst in beside] == [tmp_path / "in" / "a.4x.mp4", tmp_path / "in" / "b.4x.mkv"]


def test_a_batch_needs_a_folder_and_distinct_outputs(tmp_path: Path) -> None:
    inputs = [touch(tmp_path / "a.mp4"), touch(tmp_path / "b.mp4")]
    with pytest.raises(UsageError, match="several inputs need a folder for their outputs"):
        plan_outputs(inputs, str(tmp_path / "one.mp4"), True, 2, False, None, None)
    with pytest.raises(UsageError, match="is a file; several inputs need a folder"):
        plan_outputs(inputs, str(touch(tmp_path / "plainfile")), True, 2, False, None, None)
    twins = [touch(tmp_path / "x" / "clip.mp4"), touch(tmp_path / "y" / "clip.mp4")]
    with pytest.raises(UsageError, match="clip.mp4 and clip.mp4 would both be written to"):
        plan_outputs(twins, str(tmp_path / "done") + "/", True, 2, False, None, None)


def test_a_single_input_to_stdout_is_a_pipe(tmp_path: Path) -> None:
    [(src, dst)] = plan_outputs([touch(tmp_path / "a.mp4")], "-", False, 2, False, None, "nut")
    assert isinstance(dst, Pipe) and dst.file is None and dst.name == "stdout"


def test_an_input_is_never_its_own_output(tmp_path: Path) -> None:
    clip = touch(tmp_path / "clip.mp4")
    [(src, dst)] = plan_outputs([clip], str(clip), False, 2, False, None, None)
    with pytest.raises(OutputError, match="is the input video") as error:
        check_paths(src, dst, overwrite=True)
    assert error.value.exit_code == 4


def test_a_folder_of_videos_is_a_batch_in_natural_order(tmp_path: Path) -> None:
    for name in ("clip10.mp4", "clip2.mp4", "notes.txt", ".hidden.mp4"):
        touch(tmp_path / "videos" / name)
    inputs, batch = expand_sources((str(tmp_path / "videos"),), Fraction(24))
    assert batch and [p.name for p in inputs] == ["clip2.mp4", "clip10.mp4"]
    shot, batch = expand_sources((str(frames(tmp_path / "shot")),), Fraction(30))
    assert not batch and isinstance(shot[0], ImageSequence) and shot[0].rate == 30
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no frames or videos in the folder"):
        expand_sources((str(tmp_path / "empty"),), Fraction(24))


def test_made_folders_are_removed_while_empty(tmp_path: Path) -> None:
    made = make_folders(tmp_path / "a" / "b")
    assert made == [tmp_path / "a", tmp_path / "a" / "b"] and (tmp_path / "a" / "b").is_dir()
    remove_empty(made)
    assert not (tmp_path / "a").exists()


# Running the planned jobs.

def midpoint_only() -> SimpleNamespace:
    return SimpleNamespace(any_time=False, model=SimpleNamespace(name="sepconv"))


def test_a_midpoint_model_makes_only_2_4_or_8_times_the_rate(tmp_path: Path) -> None:
    shot = ImageSequence(frames(tmp_path / "shot"), None, Fraction(30))
    assert check_rate(shot, settings(Fraction(120)), midpoint_only()) == 4
    assert check_rate(shot, settings(), midpoint_only()) == 2
    with pytest.raises(UsageError, match=r"--fps 50: sepconv only predicts midpoints, so it can only make 60, 120, 240"):
        check_rate(shot, settings(Fraction(50)), midpoint_only())
    with pytest.raises(UsageError, match="needs the input's rate before reading it"):
        check_rate(Pipe(None, None, "stdin"), settings(Fraction(60)), midpoint_only())


class Display:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def start(self, index: int) -> None:
        pass

    def frames(self, done: int, total: int | None) -> None:
        pass

    def finish(self, index: int, ok: bool, line: str) -> None:
        self.lines.append(line)

    def note(self, line: str) -> None:
        self.lines.append(line)


def test_a_batch_reports_each_failing_file_and_returns_their_code(tmp_path: Path) -> None:
    jobs = [(tmp_path / "gone.mp4", tmp_path / "gone.2x.mp4"), (tmp_path / "lost.mp4", tmp_path / "lost.2x.mp4")]
    loaded = []
    display = Display()
    code = run_batch(jobs, loaded.append, settings(), display, started=0.0)
    assert code == InputError.exit_code and not loaded  # no model loaded when no file can be read
    assert display.lines[0] == f"gone.mp4: error: input video not found: {tmp_path / 'gone.mp4'}"
    assert display.lines[-1].startswith("0 of 2 files done, 2 failed: gone.mp4, lost.mp4; ")


@pytest.mark.parametrize("error", [WeightsError("bad weights"), ModelUsageError("--dedup needs a model")])
def test_a_batch_stops_on_an_error_of_the_model(tmp_path: Path, error: Exception) -> None:
    jobs = [(touch(tmp_path / "a.mp4"), tmp_path / "a.2x.mp4"), (touch(tmp_path / "b.mp4"), tmp_path / "b.2x.mp4")]

    def load(chosen: Path | None) -> None:
        raise error

    with pytest.raises(type(error)):
        run_batch(jobs, load, settings(), Display(), started=0.0)


def test_frames_are_counted_for_the_batch_total(tmp_path: Path) -> None:
    assert estimate_frames(ImageSequence(frames(tmp_path / "shot", 5), None)) == 5
    assert estimate_frames(tmp_path / "missing.mp4") is None
