"""Clips whose streams do not start at 0, or not together, stay in sync.

A clip cut from a longer recording often starts at, say, 0.48 s, and its video and audio
rarely start at the same instant. The output keeps every input time: rebasing the video
to 0 while the audio is copied with its own timestamps would shift picture against sound
by the offset.
"""

from __future__ import annotations

from fractions import Fraction
import warnings
from pathlib import Path

import av
import pytest
import torch

from sepconv_cli.video import FrameReader, VideoWarning, probe
from sepconv_cli.pipeline import RATE_NOTE, VideoOptions, interpolate_video, retime_video
from tests.media import make_video

OFFSET = Fraction(12, 25)  # 0.48 s: twelve frames at 25 fps
FAST = VideoOptions(preset="ultrafast")


def video_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.pts * s.time_base for f in c.decode(s)]


def time_base(path: Path) -> Fraction:
    with av.open(str(path)) as c:
        return c.streams.video[0].time_base


def audio_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return [p.pts * s.time_base for p in c.demux(s) if p.size]


def blend(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    w = 0.5 if t is None else t.float()[:, None, None, None]
    return a * (1 - w) + b * w


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
@pytest.mark.parametrize(
    ("video_start", "audio_start"), [(OFFSET, 0), (0, OFFSET)], ids=["video-after-audio", "audio-after-video"]
)
@pytest.mark.parametrize("mode", ["factor", "fps"])
def test_stream_start_times_are_kept(
    tmp_path: Path, suffix: str, video_start: Fraction, audio_start: Fraction, mode: str
) -> None:
    src = make_video(tmp_path / f"in{suffix}", frames=12, rate=25, video_start=video_start, audio_start=audio_start)
    assert video_times(src)[0] == video_start  # the clip is what the test means
    dst = tmp_path / f"out{suffix}"
    if mode == "factor":  # --factor 2
        interpolate_video(src, dst, blend, options=FAST)
        expected = [video_start + Fraction(i, 50) for i in range(24)]
    else:  # --fps 60: 0.48 s of video is 28.8 frame periods, so 29 frames
        assert "k/RATE seconds after the first frame" in RATE_NOTE  # what the documented note says
        retime_video(src, dst, blend, 60, options=FAST)
        expected = [video_start + Fraction(k, 60) for k in range(29)]
    # Matroska stores milliseconds, so k/60 is rounded there; MP4's time base is exact.
    tick = time_base(dst)
    times = video_times(dst)
    assert len(times) == len(expected)
    assert all(abs(a - e) <= tick / 2 for a, e in zip(times, expected)), (times, expected)
    # Audio is copied packet for packet, so picture and sound keep their distance.
    assert audio_times(dst) == audio_times(src)


def test_audio_that_outlasts_the_video_is_not_a_truncated_video(tmp_path: Path) -> None:
    """Matroska gives no stream duration; its container duration is the longest track's, here
    the audio's (0.48 s to 0.96 s). The video's own end tag says it is complete."""
    src = make_video(tmp_path / "in.mkv", frames=12, rate=25, audio_start=OFFSET)
    assert probe(src).duration == pytest.approx(0.48, abs=0.001)
    reader = FrameReader(src)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        assert len(list(reader)) == 12
    assert not reader.truncated


@pytest.mark.parametrize("flag", [["--factor", "2"], ["--fps", "60"]], ids=["factor", "fps"])
def test_the_cli_keeps_the_offset_too(tmp_path: Path, flag: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sepconv_cli.cli import cli

    monkeypatch.delenv("SEPCONV_WEIGHTS_DIR", raising=False)  # the shipped flowsep weights
    src = make_video(tmp_path / "in.mp4", frames=6, rate=25, video_start=OFFSET)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(cli, ["interpolate", str(src), *flag, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    times = video_times(out)
    step = Fraction(1, 50) if flag[0] == "--factor" else Fraction(1, 60)
    assert times[0] == OFFSET and times == [OFFSET + k * step for k in range(len(times))]
    assert audio_times(out) == audio_times(src)
