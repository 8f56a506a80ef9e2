"""``--start``/``--duration``: a part of the input, its audio cut to match and in sync."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.timespan import TimeSpan, parse_time
from tests.media import AUDIO_RATE, decode_rgb, texture

RATE = 25
W, H = 64, 48


def tone_hz(t: np.ndarray) -> np.ndarray:
    """400 Hz for the first half second, then 800, 1200, 1600: the time can be heard."""
    return 400.0 * (1 + np.floor(t / 0.5))


def make_clip(path: Path, seconds: float = 2.0) -> Path:
    """A textured pan (frame i: ``texture(i)``) with the stepped tone, AAC, keyframes every 10 frames."""
    frames = int(seconds * RATE)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=RATE)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv444p"
        vs.options = {"preset": "ultrafast", "crf": "0", "g": "10", "keyint_min": "10"}
        aud = out.add_stream("aac", rate=AUDIO_RATE)
        aud.layout = "mono"
        t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
        phase = 2 * np.pi * np.cumsum(tone_hz(t)) / AUDIO_RATE
        samples = (0.4 * np.sin(phase)).astype(np.float32)
        step = AUDIO_RATE // RATE
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(texture(i, W, H), format="rgb24").reformat(format="yuv444p")
            vf.pts, vf.time_base = i, Fraction(1, RATE)
            out.mux(vs.encode(vf))
            af = av.AudioFrame.from_ndarray(samples[None, i * step:(i + 1) * step], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = AUDIO_RATE, i * step, Fraction(1, AUDIO_RATE)
            out.mux(aud.encode(af))
        out.mux(vs.encode(None))
        out.mux(aud.encode(None))
    return path


def audio_of(path: Path) -> tuple[np.ndarray, float]:
    """The decoded mono samples and the time of the first one (s)."""
    with av.open(str(path)) as c:
        chunks, first = [], None
        for frame in c.decode(audio=0):
            if first is None:
                first = float(frame.pts * frame.time_base)
            chunks.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(chunks), first


def video_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / AUDIO_RATE)[spectrum.argmax()])


def step_time(samples: np.ndarray, first: float, t0: float, t1: float) -> float:
    """When the tone first goes above 1400 Hz between ``t0`` and ``t1`` s (20 ms windows, 1 ms apart)."""
    for start in range(int((t0 - first) * AUDIO_RATE), int((t1 - first) * AUDIO_RATE), AUDIO_RATE // 1000):
        if peak_hz(samples[start:start + AUDIO_RATE // 50]) > 1400:
            return start / AUDIO_RATE + first
    raise AssertionError("no step to 1600 Hz")


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("text, seconds", [
    ("12.5", Fraction(25, 2)), ("90", Fraction(90)), ("0", Fraction(0)), (".25", Fraction(1, 4)),
    ("1:02.5", Fraction(125, 2)), ("01:02:03.250", Fraction(3723250, 1000)), ("0:00:07", Fraction(7)),
])
def test_times_are_read_exactly(text: str, seconds: Fraction) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "12s", "1:75", "1:60:00", "a:b", "1e3", "1::2"])
def test_a_bad_time_says_what_a_time_is(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_time(text)


def test_a_part_has_its_frames_its_audio_and_starts_at_zero(tmp_path: Path, flowsep_weights: Path) -> None:
    src = make_clip(tmp_path / "tone.mp4")
    out = tmp_path / "part.mkv"
    # 1.08 s is frame 27, between keyframes 20 and 30; 0.6 s is 15 frames (27..41).
    code, output = run("interpolate", src, "--out", out, "--start", "1.08", "--duration", "0.6", "--lossless",
                       "--weights", flowsep_weights)
    assert code == 0, output
    assert "15 → 30 frames" in output and "0.600 s" in output
    times = video_times(out)
    assert len(times) == 30 and times[0] == 0 and times[-1] == pytest.approx(0.58)
    frames = decode_rgb(out)
    source = decode_rgb(src)
    # The input frames kept are the part's own: output frame 2k is input frame 27 + k.
    for k in (0, 7, 14):
        assert np.abs(frames[2 * k].astype(int) - source[27 + k].astype(int)).max() <= 2

    samples, first = audio_of(out)
    # Copied packet by packet: the audio starts within one AAC packet of 0 and ends within one of 0.6 s.
    assert 0 <= first < 1024 / AUDIO_RATE
    assert first + samples.size / AUDIO_RATE == pytest.approx(0.6, abs=1024 / AUDIO_RATE + 1e-3)
    at = lambda t0, t1: samples[int((t0 - first) * AUDIO_RATE):int((t1 - first) * AUDIO_RATE)]  # noqa: E731
    assert peak_hz(at(0.05, 0.38)) == pytest.approx(1200, abs=15)  # source 1.13–1.46 s
    assert peak_hz(at(0.46, 0.58)) == pytest.approx(1600, abs=15)  # source 1.54–1.66 s
    # In sync: the tone steps at 1.5 s in the source, so at 0.42 s in the output (measured
    # the same way in both, so the AAC decoder's own delay cancels out).
    source_samples, source_first = audio_of(src)
    in_source = step_time(source_samples, source_first, 1.38, 1.62)
    assert step_time(samples, first, 0.30, 0.54) - in_source == pytest.approx(-1.08, abs=0.003)


def test_start_alone_runs_to_the_end_and_duration_alone_from_the_beginning(tmp_path: Path,
                                                                            flowsep_weights: Path) -> None:
    src = make_clip(tmp_path / "tone.mp4", seconds=1.0)
    code, output = run("interpolate", src, "--out", tmp_path / "tail.mkv", "--start", "0:00.6", "--lossless",
                       "--weights", flowsep_weights)
    assert code == 0, output
    assert "10 → 20 frames" in output and "0.400 s" in output
    code, output = run("interpolate", src, "--out", tmp_path / "head.mkv", "--duration", "0.2", "--lossless",
                       "--weights", flowsep_weights)
    assert code == 0, output
    assert "5 → 10 frames" in output and "0.200 s" in output
    assert peak_hz(audio_of(tmp_path / "head.mkv")[0][2000:9000]) == pytest.approx(400, abs=15)


def test_a_part_outside_the_video_or_a_bad_time_is_one_line(tmp_path: Path, flowsep_weights: Path) -> None:
    src = make_clip(tmp_path / "tone.mp4", seconds=0.4)
    out = tmp_path / "o.mkv"
    code, output = run("interpolate", src, "--out", out, "--start", "3", "--weights", flowsep_weights)
    assert code == 2 and output == "error: --start 3 s is past the end of tone.mp4 (0.400 s long)\n"
    assert not out.exists() and not list(tmp_path.glob(".*"))
    code, output = run("interpolate", src, "--out", out, "--start", "12s", "--weights", flowsep_weights)
    assert code == 2 and output.startswith("error: --start: '12s' is not a time") and output.count("\n") == 1
    code, output = run("interpolate", src, "--out", out, "--duration", "0", "--weights", flowsep_weights)
    assert code == 2 and output == "error: --duration must be more than 0 s, not 0\n"
    assert not out.exists()


def test_a_part_of_a_frame_folder(tmp_path: Path, flowsep_weights: Path) -> None:
    import cv2

    folder = tmp_path / "shot"
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f"{i:04d}.png"), texture(i, W, H)[:, :, ::-1])
    out = tmp_path / "part"
    # At 10 fps, 0.3 s to 0.7 s is frames 3, 4, 5 and 6.
    code, output = run("interpolate", folder, "--input-fps", "10", "--out", f"{out}/", "--start", "0.3",
                       "--duration", "0.4", "--weights", flowsep_weights)
    assert code == 0, output
    assert "4 → 8 frames" in output
    written = sorted(out.iterdir())
    assert len(written) == 8
    assert np.array_equal(cv2.imread(str(written[0]))[:, :, ::-1], texture(3, W, H))
    code, output = run("interpolate", folder, "--out", tmp_path / "o.mkv", "--start", "2", "--weights", flowsep_weights)
    assert code == 2 and output.startswith("error: --start 2 s is past the end of ") and output.count("\n") == 1
    assert output.endswith("shot/ (0.417 s long)\n")  # 10 frames at the default 24 fps


def test_a_span_is_checked_when_made() -> None:
    with pytest.raises(ValueError):
        TimeSpan(Fraction(-1))
    assert list(TimeSpan(Fraction(3, 10), Fraction(4, 10)).frame_range(Fraction(10), 10)) == [3, 4, 5, 6]


def test_subtitles_are_cut_to_the_part(tmp_path: Path, flowsep_weights: Path) -> None:
    from tests.media import make_video

    # 12 frames at 25 fps (0.48 s); one cue from 0 to 240 ms.
    src = make_video(tmp_path / "sub.mkv", frames=12, subtitles=True)
    out = tmp_path / "part.mkv"
    code, output = run("interpolate", src, "--out", out, "--start", "0.2", "--lossless", "--weights", flowsep_weights)
    assert code == 0, output
    with av.open(str(out)) as c:
        cues = [(p.pts * p.time_base, p.duration * p.time_base) for p in c.demux(c.streams.subtitles[0]) if p.size]
    assert cues == [(0, Fraction(40, 1000))]  # what is left of it after 0.2 s: 200 to 240 ms


def test_a_late_part_is_reached_by_seeking_not_by_decoding_everything(tmp_path: Path) -> None:
    from sepconv_cli.video import FrameReader

    src = make_clip(tmp_path / "long.mp4", seconds=8.0)  # 200 frames, a keyframe every 10
    with FrameReader(src, span=TimeSpan(Fraction(6), Fraction(1, 2))) as reader:
        frames = list(reader)
    # Frames 150..162 (6 s to 6.5 s); decoding starts at the keyframe at 150, not at 0.
    assert len(frames) == 13 and frames[0].timestamp == 0
    assert reader.cut.start == 6 and reader.frames_decoded < 30
    assert frames[0].pts == 0 and frames[-1].pts == Fraction(12, 25)
