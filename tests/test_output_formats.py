"""What ``sepconv interpolate`` writes: y4m's frame rate and chroma siting, the encoder
chosen for containers that cannot hold H.264 (WebM, MPEG-PS), full chroma kept for RGB
input, and where outputs go (folders named with a slash, missing folders made)."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.video import VideoWriter, choose_pix_fmt, iter_frames, probe
from tests.media import make_video, texture


def run(*args: object) -> tuple[int, str, bytes]:
    """Exit code, the messages (stderr) and the bytes on stdout."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stderr, result.stdout_bytes


def y4m_header(data: bytes) -> list[bytes]:
    assert data.startswith(b"YUV4MPEG2 "), data[:40]
    return data.split(b"\n", 1)[0].split(b" ")[1:]


def read_back(data: bytes) -> tuple[Fraction, int, float]:
    """The rate, frame count and duration (frames / rate) PyAV reads from a stream."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return Fraction(stream.average_rate), frames, frames / float(stream.average_rate)


def write_frames(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        assert cv2.imwrite(str(folder / f"{i + 1:04d}.png"), texture(i, 64, 48)[:, :, ::-1])
    return folder


def make_y4m(path: Path, frames: int, chroma: str | None = None) -> Path:
    """A raw y4m file; ``chroma`` ("left", "center", "topleft") sets its C420 siting tag."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if chroma:
            stream.options = {"chroma_sample_location": chroma}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(texture(i, 64, 48), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def source(kind: str, tmp_path: Path) -> Path:
    """Four frames at 25 fps (frames: 4 PNGs, played at the default 24 fps)."""
    if kind == "frames":
        return write_frames(tmp_path / "shot", 4)
    if kind == "y4m":
        return make_y4m(tmp_path / "in.y4m", 4)
    return make_video(tmp_path / f"in.{kind}", frames=4, audio=False)


# -- 1. y4m's rate -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv", "y4m", "frames"])
@pytest.mark.parametrize("rate", [("--factor", "2"), ("--fps", "60")])
def test_y4m_on_stdout_states_the_output_rate(tmp_path: Path, flowsep_weights: Path, kind: str, rate) -> None:
    src = source(kind, tmp_path)
    code, output, data = run("interpolate", src, "--out", "-", *rate, "--weights", flowsep_weights, "--quiet")
    assert code == 0, output
    input_rate = Fraction(24) if kind == "frames" else Fraction(25)
    expected = 2 * input_rate if rate[0] == "--factor" else Fraction(60)
    assert f"F{expected.numerator}:{expected.denominator}".encode() in y4m_header(data)
    got_rate, frames, seconds = read_back(data)
    assert got_rate == expected
    # As long as the input: 4 frames of 1/rate each.
    assert seconds == pytest.approx(4 / float(input_rate), abs=0.5 / float(expected))
    assert frames == (8 if rate[0] == "--factor" else int(np.ceil(4 / input_rate * 60)))


def test_a_y4m_file_gets_its_rate_from_the_writer_not_the_time_base(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    info = probe(src)  # time base 1/12800
    with VideoWriter(tmp_path / "out.y4m", info, rate=Fraction(50), time_base=info.time_base / 2) as writer:
        for frame in iter_frames(src):
            writer.write(frame.source, 2 * frame.timestamp)
            writer.write(frame.source, 2 * frame.timestamp + 256)
    assert b"F50:1" in y4m_header((tmp_path / "out.y4m").read_bytes())
    assert read_back((tmp_path / "out.y4m").read_bytes()) == (Fraction(50), 8, 0.16)


# -- 2. an encoder the container holds -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "audio", "expected"),
    [("clip.webm", "libvpx-vp9", "libopus", "vp9"), ("clip.mpg", "mpeg2video", "mp2", "mpeg2video")],
)
def test_webm_and_mpeg_ps_inputs_get_an_encoder_their_container_holds(
    tmp_path: Path, flowsep_weights: Path, name: str, codec: str, audio: str, expected: str
) -> None:
    src = make_video(tmp_path / name, frames=4, codec=codec, audio_codec=audio)
    code, output, _ = run("interpolate", src, "--weights", flowsep_weights)
    assert code == 0, output
    out = tmp_path / name.replace(".", ".2x.")
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == expected
        assert stream.average_rate == 50
        assert sum(1 for _ in container.decode(video=0)) == 8
        assert len(container.streams.audio) == 1
    encoder = "libvpx-vp9" if expected == "vp9" else "mpeg2video"
    assert f"{encoder} ({out.suffix} cannot hold libx264)" in output  # the summary says which


def test_an_explicit_codec_the_container_cannot_hold_is_still_an_error(tmp_path: Path, flowsep_weights: Path) -> None:
    src = make_video(tmp_path / "clip.webm", frames=3, codec="libvpx-vp9", audio=False)
    code, output, _ = run("interpolate", src, "--codec", "libx264", "--weights", flowsep_weights)
    assert code == 4
    assert output.startswith("error: a .webm file cannot hold libx264 video") and output.count("\n") == 1
    assert "libvpx-vp9" in output
    assert [p.name for p in tmp_path.iterdir()] == ["clip.webm"]


def test_vp9_quality_follows_crf(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=6, audio=False, width=128, height=96)
    sizes = []
    for crf in (10, 40):
        dst = tmp_path / f"out{crf}.webm"
        with VideoWriter(dst, probe(src), crf=crf, preset="ultrafast") as writer:
            for frame in iter_frames(src):
                writer.write(frame.source, frame.timestamp)
        sizes.append(dst.stat().st_size)
    assert sizes[0] > 1.5 * sizes[1]


def test_mpeg2_quality_follows_crf(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=6, audio=False, width=256, height=192)
    sizes = []
    for crf in (10, 40):
        dst = tmp_path / f"out{crf}.mpg"
        with VideoWriter(dst, probe(src), crf=crf) as writer:
            for frame in iter_frames(src):
                writer.write(frame.source, frame.timestamp)
        sizes.append(dst.stat().st_size)
    assert sizes[0] > 1.5 * sizes[1]


# -- 7. full chroma ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "src", "expected"),
    [
        ("libx264", "rgb24", "yuv444p"),  # RGB frames into H.264: 4:4:4, not 4:2:0
        ("libx264", "gbrp", "yuv444p"),  # libx264rgb video decodes as gbrp
        ("libx264", "rgb48le", "yuv444p10le"),
        ("libvpx-vp9", "gbrp", "yuv444p"),
        ("libx265", "gbrp", "yuv444p"),
        ("ffv1", "rgb24", "bgr0"),  # lossless keeps RGB
        ("libx264rgb", "gbrp", "bgr0"),  # an RGB encoder asked for: RGB
        ("mpeg2video", "rgb24", "yuv420p"),  # no 4:4:4 in MPEG-2
        ("libx264", "yuv444p", "yuv444p"),
        ("libx264", "yuv420p", "yuv420p"),
    ],
)
def test_rgb_and_444_keep_full_chroma(codec: str, src: str, expected: str) -> None:
    depth = 16 if src == "rgb48le" else 8
    assert choose_pix_fmt(codec, src, depth, 64, 48) == expected


@pytest.mark.parametrize("kind", ["libx264rgb", "frames", "yuv444p", "yuv420p"])
def test_rgb_input_gives_444_output_and_420_stays_420(tmp_path: Path, flowsep_weights: Path, kind: str) -> None:
    if kind == "frames":
        src = write_frames(tmp_path / "shot", 3)
    elif kind == "libx264rgb":
        src = make_video(tmp_path / "in.mkv", frames=3, codec="libx264rgb", pix_fmt="bgr0", audio=False)
    else:
        src = make_video(tmp_path / "in.mkv", frames=3, pix_fmt=kind, audio=False)
    out = tmp_path / "out.mp4"
    code, output, _ = run("interpolate", src, "--out", out, "--weights", flowsep_weights, "--crf", "0")
    assert code == 0, output
    info = probe(out)
    assert info.pix_fmt == ("yuv420p" if kind == "yuv420p" else "yuv444p")
    if kind in ("libx264rgb", "frames"):
        # YUV made from RGB is tagged with the matrix it was made with, never "RGB" (0).
        assert info.colorspace in (1, 6) and info.color_range == 1
        got = next(iter_frames(out)).rgb.astype(int)
        want = (next(iter_frames(src)).rgb if kind == "libx264rgb" else texture(0, 64, 48))
        assert np.abs(got - want.astype(int)).mean() < 1  # only rounding: the right matrix and range


# -- 8. small things ---------------------------------------------------------------------


def test_y4m_keeps_the_inputs_chroma_siting(tmp_path: Path, flowsep_weights: Path) -> None:
    src = make_y4m(tmp_path / "in.y4m", 3, chroma="left")
    assert b"C420mpeg2" in y4m_header(src.read_bytes())
    assert probe(src).chroma_location == "left"
    code, output, data = run("interpolate", src, "--out", "-", "--weights", flowsep_weights, "--quiet")
    assert code == 0, output
    assert b"C420mpeg2" in y4m_header(data)
    # The same through a pipe, where the header is read before FFmpeg sees the stream.
    result = CliRunner().invoke(cli, ["interpolate", "-", "--out", "-", "--weights", str(flowsep_weights), "--quiet"],
                                input=src.read_bytes())
    assert result.exit_code == 0, result.output
    assert b"C420mpeg2" in y4m_header(result.stdout_bytes)
    assert read_back(result.stdout_bytes)[1] == 6


def test_a_y4m_without_a_siting_tag_stays_jpeg_sited(tmp_path: Path) -> None:
    src = make_y4m(tmp_path / "in.y4m", 2)
    assert b"C420jpeg" in y4m_header(src.read_bytes())
    assert probe(src).chroma_location == "center"


def test_a_batch_out_folder_named_with_a_slash_is_a_folder(tmp_path: Path, flowsep_weights: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    make_video(clips / "a.mp4", frames=3, audio=False)
    make_video(clips / "b.mp4", frames=3, audio=False)
    code, output, _ = run("interpolate", clips, "--fps", "60", "--out", f"{tmp_path / 'clips.60'}/",
                          "--weights", flowsep_weights)
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "clips.60").iterdir()) == ["a.60fps.mp4", "b.60fps.mp4"]


@pytest.mark.parametrize("out", ["new/deeper/out.mp4", "new/deeper/frames/"])
def test_a_single_output_into_missing_folders_makes_them(tmp_path: Path, flowsep_weights: Path, out: str) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    code, output, _ = run("interpolate", src, "--out", f"{tmp_path}/{out}", "--weights", flowsep_weights)
    assert code == 0, output
    target = tmp_path / out
    assert target.is_file() if target.suffix else len(list(target.iterdir())) == 6


def test_missing_folders_are_removed_again_when_the_run_fails(tmp_path: Path, flowsep_weights: Path) -> None:
    src = make_video(tmp_path / "one.mp4", frames=1, audio=False)  # one frame: nothing to interpolate
    code, output, _ = run("interpolate", src, "--out", tmp_path / "new" / "deeper" / "out.mp4",
                          "--weights", flowsep_weights)
    assert code == 3, output
    assert not (tmp_path / "new").exists()


def test_the_frames_out_summary_names_the_folder(tmp_path: Path, flowsep_weights: Path) -> None:
    shot = write_frames(tmp_path / "shot", 3)
    code, output, _ = run("interpolate", shot, "--weights", flowsep_weights)
    assert code == 0, output
    assert (tmp_path / "shot.2x").is_dir()
    summary = output.strip().splitlines()[-1]
    assert summary.startswith("shot.2x/: 3 → 6 frames"), summary
    assert "%06d" not in summary


@pytest.mark.parametrize(("name", "codec", "expected"), [("out.ts", None, "h264"), ("out.mpg", "libx264", "h264")])
def test_mpeg_streams_hold_what_their_muxers_take(tmp_path: Path, name: str, codec: str | None, expected: str) -> None:
    # FFmpeg's codec query lists only MPEG-2 for MPEG-TS and MPEG-1 for MPEG-PS.
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    with VideoWriter(tmp_path / name, probe(src), codec=codec, preset="ultrafast") as writer:
        for frame in iter_frames(src):
            writer.write(frame.source, frame.timestamp)
    assert probe(tmp_path / name).codec == expected
    assert len(list(iter_frames(tmp_path / name))) == 3
