"""Several inputs in one run: one output each, a failing file reported while the others
finish, the exit code telling whether all succeeded, one progress display."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.progress import Progress

from sepconv_cli.cli import cli
from sepconv_cli.commands.batch import BatchBars
from tests.interrupts import interrupt_when, interrupted_cleanly
from tests.media import make_video, texture

ROOT = Path(__file__).resolve().parents[1]



def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def corrupt(path: Path) -> Path:
    """A file named like a video whose bytes are a video's head and then garbage."""
    good = make_video(path.with_name("good-" + path.name), frames=6, audio=False).read_bytes()
    path.write_bytes(good[:48] + os.urandom(4000))
    path.with_name("good-" + path.name).unlink()
    return path


def test_a_folder_of_videos_with_one_corrupt_file(tmp_path: Path, flowsep_weights: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", frames=4, audio=True)
    corrupt(videos / "b.mp4")
    make_video(videos / "c10.mkv", frames=5, audio=False)
    make_video(videos / "c9.mkv", frames=3, audio=False)
    (videos / "notes.txt").write_text("not a video, not picked up")
    before = {p.name: p.read_bytes() for p in videos.iterdir()}
    out = tmp_path / "done"
    code, output = run("interpolate", videos, "--out", out, "--weights", flowsep_weights)
    assert code == 3, output  # the failure's own exit code: an input error
    lines = output.splitlines()
    # One line per file in natural order (c9 before c10), one error line, the tally.
    assert lines[0].startswith("[1/4] a.2x.mp4: 4 → 8 frames")
    assert lines[1].startswith("[2/4] b.mp4: error: ") and "Traceback" not in output
    assert lines[2].startswith("[3/4] c9.2x.mkv") and lines[3].startswith("[4/4] c10.2x.mkv")
    assert lines[4].startswith("3 of 4 files done, 1 failed: b.mp4; ") and len(lines) == 5
    assert sorted(p.name for p in out.iterdir()) == ["a.2x.mp4", "c10.2x.mkv", "c9.2x.mkv"]
    assert frame_count(out / "a.2x.mp4") == 8 and frame_count(out / "c10.2x.mkv") == 10
    assert {p.name: p.read_bytes() for p in videos.iterdir()} == before  # inputs untouched


def test_several_sources_write_beside_each_input_and_exit_0(tmp_path: Path, flowsep_weights: Path) -> None:
    (tmp_path / "x").mkdir()
    first = make_video(tmp_path / "x" / "one.mp4", frames=3, audio=False)
    second = make_video(tmp_path / "two.mkv", frames=3, audio=False)
    code, output = run("interpolate", first, second, "--fps", "50", "--weights", flowsep_weights, "--quiet")
    assert code == 0 and output == ""
    assert frame_count(tmp_path / "x" / "one.50fps.mp4") == 6 and frame_count(tmp_path / "two.50fps.mkv") == 6


def test_videos_and_frame_folders_together(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", frames=3, audio=False)
    shot = tmp_path / "shot"
    shot.mkdir()
    for i in range(3):
        cv2.imwrite(str(shot / f"{i:04d}.png"), texture(i, 64, 48)[:, :, ::-1])
    code, output = run("interpolate", video, shot, "--out", tmp_path / "out", "--weights", flowsep_weights)
    assert code == 0, output
    assert frame_count(tmp_path / "out" / "clip.2x.mp4") == 6
    assert len(list((tmp_path / "out" / "shot.2x").iterdir())) == 6


def test_every_file_failing_leaves_no_output_folder(tmp_path: Path, flowsep_weights: Path) -> None:
    bad = [corrupt(tmp_path / "p.mp4"), corrupt(tmp_path / "q.mp4")]
    code, output = run("interpolate", *bad, "--out", tmp_path / "out", "--weights", flowsep_weights)
    assert code == 3
    assert output.splitlines()[-1].startswith("0 of 2 files done, 2 failed: p.mp4, q.mp4; ")
    assert not (tmp_path / "out").exists()


def test_failures_of_different_kinds_exit_1(tmp_path: Path, flowsep_weights: Path) -> None:
    good = make_video(tmp_path / "g.mp4", frames=3, audio=False)
    bad = corrupt(tmp_path / "b.mp4")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "g.2x.mp4").write_bytes(b"already here")  # exists: an output error (4)
    code, output = run("interpolate", good, bad, "--out", tmp_path / "out", "--weights", flowsep_weights)
    assert code == 1, output
    assert "g.mp4: error: output" in output and "b.mp4: error: " in output
    assert (tmp_path / "out" / "g.2x.mp4").read_bytes() == b"already here"


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda t: [t / "a" / "v.mp4", t / "b" / "v.mp4", "--out", t / "o"], "would both be written to"),
        (lambda t: [t / "a" / "v.mp4", t / "b" / "v.mp4", "--out", t / "o.mp4"], "need a folder"),
        (lambda t: [t / "a" / "v.mp4", "-"], "cannot be combined"),
    ],
)
def test_batch_usage_errors(tmp_path: Path, flowsep_weights: Path, make_args, message: str) -> None:  # noqa: ANN001
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        make_video(tmp_path / folder / "v.mp4", frames=3, audio=False)
    code, output = run("interpolate", *make_args(tmp_path), "--weights", flowsep_weights)
    assert code == 2 and output.startswith("error: ") and message in output and output.count("\n") == 1


def test_bad_weights_stop_the_batch_once(tmp_path: Path) -> None:
    videos = [make_video(tmp_path / f"{n}.mp4", frames=3, audio=False) for n in "ab"]
    weights = tmp_path / "bad.pt"
    weights.write_bytes(b"not weights")
    code, output = run("interpolate", *videos, "--weights", weights)
    assert code == 5 and output.startswith("error: ") and output.count("\n") == 1


def test_the_display_has_a_line_per_file_and_a_total() -> None:
    screen = io.StringIO()
    with Progress(console=Console(file=screen, force_terminal=True, width=100)) as bar:
        shown: list[str] = []
        display = BatchBars(bar, ["a.mp4", "b.mp4", "c.mp4"], [10, None, 30], shown.append)
        assert [t.description for t in bar.tasks] == ["all 3 files", "  a.mp4: waiting", "  b.mp4: waiting",
                                                      "  c.mp4: waiting"]
        assert bar.tasks[0].total == 10 + 20 + 30  # the unknown length counts as the average
        display.start(0)
        display.frames(5, 10)
        assert bar.tasks[0].completed == 5
        display.finish(0, True, "a.2x.mp4: done")
        display.start(1)
        display.frames(8, 16)
        display.finish(1, False, "b.mp4: error: broken")
        assert bar.tasks[0].completed == 30 and bar.tasks[2].description == "  b.mp4: failed"
        assert bar.tasks[1].description == "  a.mp4: done"
    assert shown == ["[1/3] a.2x.mp4: done", "[2/3] b.mp4: error: broken"]


def test_ctrl_c_stops_the_whole_batch_with_130(tmp_path: Path, flowsep_weights: Path) -> None:
    videos = [make_video(tmp_path / f"{n}.mp4", frames=300, width=128, height=96, audio=False) for n in "ab"]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sepconv_cli", "interpolate", *map(str, videos), "--out", str(out), "--factor", "8",
         "--weights", str(flowsep_weights)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    code, stderr = interrupt_when(proc, lambda: out.exists() and any(out.glob(".*partial*")))
    assert code == 130
    assert interrupted_cleanly(stderr)
    assert not out.exists() or not list(out.iterdir())


def test_a_frame_folder_with_a_gap_fails_alone(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", frames=3, audio=False)
    shot = tmp_path / "shot"
    shot.mkdir()
    for i in (1, 2, 4):
        cv2.imwrite(str(shot / f"{i:04d}.png"), texture(i, 64, 48)[:, :, ::-1])
    code, output = run("interpolate", shot, video, "--out", tmp_path / "out", "--weights", flowsep_weights)
    assert code == 3, output
    assert "shot: error: " in output and "frame 3 missing" in output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip.2x.mp4"]
