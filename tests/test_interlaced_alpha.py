"""Interlaced and alpha input: warned about in one line; ``--deinterlace`` removes the combing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.video import probe
from tests.media import decode_rgb, make_video

W, H = 64, 48


def bar(x: float) -> np.ndarray:
    """A bright vertical bar with its left edge at ``x`` on a dark background."""
    rgb = np.full((H, W, 3), 30, np.uint8)
    rgb[:, int(round(x)): int(round(x)) + 12] = 220
    return rgb


def interlaced(path: Path, codec: str, order: str, frames: int = 8) -> Path:
    """Each frame woven from two fields 1/50 s apart (the bar moves 4 px per field), coded
    as interlaced: MPEG-2 (which writes bottom field first) or x264 with tff/bff."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        ctx = stream.codec_context
        if codec == "mpeg2video":
            ctx.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            stream.options = {"qscale": "2"}
            ctx.qmin = ctx.qmax = 2
        else:
            stream.options = {"preset": "ultrafast", "qp": "4", "x264-params": f"interlaced=1:{'tff' if order == 'tt' else 'bff'}=1"}
        for i in range(frames):
            first, second = bar(4 + 8 * i), bar(8 + 8 * i)
            woven = first.copy()
            woven[1::2] = second[1::2]  # top field (even rows) first, then the bottom field
            if order == "bb":
                woven = second.copy()
                woven[1::2] = first[1::2]
            frame = av.VideoFrame.from_ndarray(woven, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def combing(rgb: np.ndarray) -> float:
    """How much neighbouring rows disagree beyond what rows two apart do (0 for a progressive picture of vertical edges)."""
    y = rgb.astype(np.float64).mean(axis=2)
    return float(np.abs(y[1:] - y[:-1]).mean() - 0.5 * np.abs(y[2:] - y[:-2]).mean())


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("codec, order", [("mpeg2video", "bb"), ("libx264", "tt"), ("libx264", "bb")])
def test_the_field_order_is_read(tmp_path: Path, codec: str, order: str) -> None:
    info = probe(interlaced(tmp_path / "i.mkv", codec, order))
    assert info.field_order == order and info.interlaced
    assert probe(make_video(tmp_path / "p.mkv", frames=3, audio=False)).field_order == "progressive"


def test_interlaced_input_is_warned_about_or_deinterlaced(tmp_path: Path, flowsep_weights: Path) -> None:
    src = interlaced(tmp_path / "tape.mpg", "mpeg2video", "bb")
    code, output = run("interpolate", src, "--out", tmp_path / "combed.mkv", "--lossless", "--weights", flowsep_weights)
    assert code == 0, output
    lines = [line for line in output.splitlines() if "interlaced" in line]
    assert lines == ["warning: tape.mpg is interlaced (bb): interpolated as progressive frames its moving edges comb; "
                     "use --deinterlace (bwdif), or deinterlace it first (ffmpeg -i in -vf bwdif out)"]
    code, output = run("interpolate", src, "--out", tmp_path / "clean.mkv", "--lossless", "--deinterlace",
                       "--weights", flowsep_weights)
    assert code == 0, output
    assert "interlaced" not in output and "8 → 16 frames" in output
    combed = [combing(f) for f in decode_rgb(tmp_path / "combed.mkv")[::2]]
    clean = [combing(f) for f in decode_rgb(tmp_path / "clean.mkv")[::2]]
    assert min(combed) > 5 and max(clean) < min(combed) / 3, (combed, clean)
    # A progressive input is left alone by --deinterlace.
    progressive = make_video(tmp_path / "p.mkv", frames=4, audio=False, codec="ffv1", pix_fmt="yuv444p")
    code, output = run("interpolate", progressive, "--out", tmp_path / "p2.mkv", "--lossless", "--deinterlace",
                       "--weights", flowsep_weights)
    assert code == 0, output
    assert all(np.array_equal(a, b) for a, b in zip(decode_rgb(progressive), decode_rgb(tmp_path / "p2.mkv")[::2]))


def _alpha_video(path: Path, codec: str, pix_fmt: str, options: dict[str, str] | None = None) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.options = options or {}
        for i in range(3):
            rgba = np.zeros((H, W, 4), np.uint8)
            rgba[..., :3] = bar(4 + 4 * i)
            rgba[..., 3] = 128
            frame = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format=pix_fmt)
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("name, codec, pix_fmt, options", [
    ("vp9.webm", "libvpx-vp9", "yuva420p", None),  # alpha in Matroska's side data: the stream is yuv420p
    ("prores4444.mov", "prores_ks", "yuva444p10le", {"profile": "4"}),
    ("png.mov", "png", "rgba", None),
])
def test_alpha_in_a_video_is_warned_about(tmp_path: Path, flowsep_weights: Path, name: str, codec: str,
                                          pix_fmt: str, options: dict[str, str] | None) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV without {codec}")
    src = _alpha_video(tmp_path / name, codec, pix_fmt, options)
    assert probe(src).alpha
    code, output = run("interpolate", src, "--out", tmp_path / "o.mkv", "--lossless", "--weights", flowsep_weights)
    assert code == 0, output
    assert [line for line in output.splitlines() if "alpha" in line] == [
        f"warning: {name} has an alpha channel ({probe(src).pix_fmt}): it is dropped, the output is opaque"]
    assert not probe(make_video(tmp_path / "p.mkv", frames=3, audio=False)).alpha


def test_an_rgba_frame_folder_is_warned_about(tmp_path: Path, flowsep_weights: Path) -> None:
    import cv2

    folder = tmp_path / "shot"
    folder.mkdir()
    for i in range(3):
        rgba = np.dstack([bar(4 + 4 * i), np.full((H, W), 200, np.uint8)])
        cv2.imwrite(str(folder / f"{i:04d}.png"), rgba[..., [2, 1, 0, 3]])
    code, output = run("interpolate", folder, "--out", tmp_path / "o.mkv", "--lossless", "--weights", flowsep_weights)
    assert code == 0, output
    assert [line for line in output.splitlines() if "alpha" in line] == [
        "warning: 0000.png: the alpha channel is dropped"]
