"""Plain progress lines when stderr is a log or a pipe (nohup, a job runner), not a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.commands import progress as progress_module
from sepconv_cli.commands.progress import FrameLines
from tests.media import make_video


class StepClock:
    """A clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_line_every_interval_with_rate_and_eta() -> None:
    lines: list[str] = []
    clock = StepClock(4.0)  # construction reads it once: started at 1004
    report = FrameLines("a.mp4 → b.mp4", lines.append, every_s=10.0, clock=clock)
    for done in range(1, 11):
        report(done, 40)  # frame k is reported at 1004 + 4k s
    # Lines at 12 s (frame 3) and 24 s (frame 6), 36 s (frame 9): one per 10 s or more, none before.
    assert lines == [
        "a.mp4 → b.mp4: 3/40 (7%) frames, 0.2 frames/s, ETA 2:28 [12 s]",
        "a.mp4 → b.mp4: 6/40 (15%) frames, 0.2 frames/s, ETA 2:16 [24 s]",
        "a.mp4 → b.mp4: 9/40 (22%) frames, 0.2 frames/s, ETA 2:04 [36 s]",
    ]


def test_an_unknown_total_has_no_eta_and_a_fast_run_prints_nothing() -> None:
    lines: list[str] = []
    report = FrameLines("pipe", lines.append, every_s=10.0, clock=StepClock(30.0))
    report(5, None)
    assert lines == ["pipe: 5 frames, 0.2 frames/s [30 s]"]
    quick: list[str] = []
    report = FrameLines("pipe", quick.append, every_s=10.0, clock=StepClock(0.01))
    for done in range(100):
        report(done, 100)
    assert quick == []


def test_the_rate_leaves_out_the_warm_up() -> None:
    times = iter([0.0, 90.0, 91.0, 92.0, 93.0, 94.0, 95.0, 96.0, 97.0, 98.0, 99.0, 100.0, 101.0])
    lines: list[str] = []
    report = FrameLines("x", lines.append, every_s=10.0, clock=lambda: next(times))
    for done in range(1, 13):  # the first frame took 90 s (a kernel build), the others 1 s each
        report(done, 100)
    assert lines == ["x: 1/100 (1%) frames, 0.0 frames/s, ETA 2:28:30 [1:30]",
                     "x: 11/100 (11%) frames, 1.0 frames/s, ETA 1:29 [1:40]"]


@pytest.mark.parametrize("quiet", [False, True])
def test_interpolate_writes_lines_to_a_log(tmp_path: Path, flowsep_weights: Path, monkeypatch: pytest.MonkeyPatch,
                                           quiet: bool) -> None:
    src = make_video(tmp_path / "in.mp4", frames=6, audio=False)
    monkeypatch.setattr(progress_module, "_clock", StepClock(11.0))  # every frame is another 10 s
    args = ["interpolate", str(src), "--out", str(tmp_path / "out.mkv"), "--lossless", "--weights", str(flowsep_weights)]
    result = CliRunner().invoke(cli, args + (["--quiet"] if quiet else []))  # the runner's stderr is no terminal
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "frames/s" in line]
    if quiet:
        assert result.output == ""
    else:
        assert len(lines) == 6, result.output
        assert lines[0].startswith("in.mp4 → out.mkv: 1/6 (16%) frames, ") and "ETA" in lines[0]
        assert lines[-1].startswith("in.mp4 → out.mkv: 6/6 (100%) frames, ")


def test_a_batch_in_a_log_reports_the_running_file(tmp_path: Path, flowsep_weights: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    one = make_video(tmp_path / "one.mp4", frames=3, audio=False)
    two = make_video(tmp_path / "two.mp4", frames=3, audio=False)
    monkeypatch.setattr(progress_module, "_clock", StepClock(11.0))
    result = CliRunner().invoke(cli, ["interpolate", str(one), str(two), "--out", str(tmp_path / "out"),
                                      "--weights", str(flowsep_weights)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines if "frames/s" in line] == ["[1/2] one.mp4"] * 3 + ["[2/2] two.mp4"] * 3
    assert lines[-1].startswith("2 of 2 files done")
