"""Image sequences in and out of ``sepconv interpolate``: folders and %d patterns,
8/16-bit PNG and TIFF, JPEG, natural order, numbering gaps, safe output folders."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.errors import InputError
from sepconv_cli.pipeline import interpolate_video
from sepconv_cli.sequences import ImageSequence, SequenceReader, list_frames, natural_key
from tests.interrupts import interrupt_when, interrupted_cleanly
from tests.media import decode_rgb, make_video, texture



def write_frames(folder: Path, count: int, *, deep: bool = False, names: str = "{:06d}.png", start: int = 1) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(count):
        rgb = texture(i, 64, 48, deep=deep)
        assert cv2.imwrite(str(folder / names.format(i + start)), np.ascontiguousarray(rgb[:, :, ::-1]))
        frames.append(rgb)
    return frames


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image[:, :, ::-1]


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_16bit_png_in_16bit_png_out_bit_exact_on_the_original_frames(tmp_path: Path, flowsep_weights: Path) -> None:
    originals = write_frames(tmp_path / "in", 5, deep=True)
    code, output = run("interpolate", tmp_path / "in", "--out", tmp_path / "out" / "%06d.png",
                       "--weights", flowsep_weights)
    assert code == 0, output
    assert "5 → 10 frames" in output and "24 → 48 fps" in output and "--input-fps" in output
    files = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in files] == [f"{n:06d}.png" for n in range(1, 11)]
    frames = [read(p) for p in files]
    assert all(f.dtype == np.uint16 for f in frames)
    for k, original in enumerate(originals):
        assert np.array_equal(frames[2 * k], original)
    # The new frames are predictions between their neighbours, not copies, in full 16 bits.
    middle = frames[1].astype(np.int64)
    assert not np.array_equal(middle, originals[0]) and not np.array_equal(middle, originals[1])
    assert np.unique(middle % 256).size > 1
    assert not list(tmp_path.glob(".*partial*"))


def test_16bit_tiff_pattern_in_and_out(tmp_path: Path, flowsep_weights: Path) -> None:
    originals = write_frames(tmp_path / "tif", 3, deep=True, names="shot_{:04d}.tif")
    code, output = run("interpolate", tmp_path / "tif" / "shot_%04d.tif", "--out", tmp_path / "o" / "f%03d.tif",
                       "--weights", flowsep_weights, "--input-fps", "12")
    assert code == 0, output
    assert "12 → 24 fps" in output and "--input-fps" not in output
    frames = [read(tmp_path / "o" / f"f{n:03d}.tif") for n in range(1, 7)]
    assert frames[0].dtype == np.uint16 and np.array_equal(frames[2], originals[1])


def test_jpeg_in_png_out_by_default_next_to_the_input(tmp_path: Path, flowsep_weights: Path) -> None:
    write_frames(tmp_path / "shot", 3, names="{:d}.jpg")
    code, output = run("interpolate", tmp_path / "shot", "--weights", flowsep_weights, "--quiet")
    assert code == 0 and output == ""
    out = tmp_path / "shot.2x"
    assert sorted(p.name for p in out.iterdir()) == [f"{n:06d}.png" for n in range(1, 7)]
    assert read(out / "000001.png").dtype == np.uint8


def test_names_play_in_natural_order(tmp_path: Path) -> None:
    names = ["f1.png", "f2.png", "f10.png", "f9.png", "f11.png", "f3.png", "f4.png", "f5.png", "f6.png", "f7.png", "f8.png"]
    assert sorted(names, key=natural_key) == [f"f{n}.png" for n in range(1, 12)]
    folder = tmp_path / "n"
    write_frames(folder, 11, names="f{:d}.png")
    reader = SequenceReader(ImageSequence(folder))
    frames = list(reader)
    assert [f.index for f in frames] == list(range(11))
    assert np.array_equal(frames[9].rgb, texture(9, 64, 48))  # f10.png, not f2.png
    assert reader.info.frame_rate == 24 and reader.info.time_base == Fraction(1, 24)


def test_a_gap_in_the_numbering_is_a_one_line_input_error(tmp_path: Path, flowsep_weights: Path) -> None:
    folder = tmp_path / "gap"
    write_frames(folder, 5)
    (folder / "000003.png").unlink()
    with pytest.raises(InputError, match="jumps from 2 to 4"):
        list_frames(ImageSequence(folder))
    code, output = run("interpolate", folder, "--out", tmp_path / "o/", "--weights", flowsep_weights)
    assert code == 3
    assert output.startswith("error: ") and output.count("\n") == 1 and "frame 3 missing" in output
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".*partial*"))


def test_video_in_frames_out_and_frames_in_video_out(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "pan.mp4", frames=6, audio=True)
    code, output = run("interpolate", video, "--out", tmp_path / "frames/", "--weights", flowsep_weights)
    assert code == 0, output
    frames = sorted((tmp_path / "frames").iterdir())
    assert len(frames) == 12 and read(frames[0]).dtype == np.uint8
    assert "audio" in output  # the dropped sound is mentioned, once

    code, output = run("interpolate", tmp_path / "frames", "--out", tmp_path / "back.mkv", "--lossless",
                       "--input-fps", "50", "--weights", flowsep_weights)
    assert code == 0, output
    with av.open(str(tmp_path / "back.mkv")) as container:
        assert container.streams.video[0].average_rate == 100
    back = decode_rgb(tmp_path / "back.mkv")
    assert len(back) == 24
    # FFV1 keeps the frames' RGB exactly.
    assert np.array_equal(back[0], read(frames[0])) and np.array_equal(back[4], read(frames[2]))


def test_10bit_video_gives_16bit_frames(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "deep.mkv", frames=3, pix_fmt="yuv420p10le", audio=False)
    code, output = run("interpolate", video, "--out", tmp_path / "d", "--weights", flowsep_weights)
    assert code == 0, output
    assert read(tmp_path / "d" / "000001.png").dtype == np.uint16


def test_frames_from_the_library(tmp_path: Path) -> None:
    write_frames(tmp_path / "in", 3)
    report = interpolate_video(
        ImageSequence(tmp_path / "in", rate=Fraction(30)), ImageSequence(tmp_path / "out", "%04d.png"),
        lambda a, b: (a + b) / 2,
    )
    assert report.output_frames == 6 and report.output_rate == 60
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{n:04d}.png" for n in range(1, 7)]


def test_output_folder_is_never_mixed_with_other_files(tmp_path: Path, flowsep_weights: Path) -> None:
    write_frames(tmp_path / "in", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    base = ["interpolate", tmp_path / "in", "--out", out, "--weights", flowsep_weights]
    code, output = run(*base)
    assert code == 4 and "not empty" in output and "--overwrite" in output
    code, output = run(*base, "--overwrite")
    assert code == 4 and "notes.txt" in output
    assert (out / "notes.txt").read_text() == "keep"
    # Frames of the same pattern only: replaced as a whole.
    (out / "notes.txt").unlink()
    (out / "000099.png").write_bytes(b"old")
    code, output = run(*base, "--overwrite")
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == [f"{n:06d}.png" for n in range(1, 7)]
    code, output = run("interpolate", tmp_path / "in", "--out", tmp_path / "in" / "x%03d.png",
                       "--weights", flowsep_weights, "--overwrite")
    assert code == 4 and "is the input's" in output
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".*old*"))


def test_failure_midway_leaves_no_frames(tmp_path: Path) -> None:
    write_frames(tmp_path / "in", 4)

    def explode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError):
        interpolate_video(ImageSequence(tmp_path / "in"), ImageSequence(tmp_path / "out"), explode)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{tmp}/one.png"], "pattern such as"),
        (["--input-fps", "0"], "--input-fps '0' is not a frame rate"),
        (["--out", "{tmp}/o/%d_%d.png"], "exactly one %d"),
    ],
)
def test_bad_frame_options_are_usage_errors(tmp_path: Path, flowsep_weights: Path, args: list[str], message: str) -> None:
    write_frames(tmp_path / "in", 2)
    code, output = run("interpolate", tmp_path / "in", *[a.format(tmp=tmp_path) for a in args], "--weights", flowsep_weights)
    assert code == 2 and output.startswith("error: ") and message in output and output.count("\n") == 1


def test_ctrl_c_while_writing_frames_exits_130_and_leaves_no_folder(tmp_path: Path, flowsep_weights: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    video = make_video(tmp_path / "long.mp4", frames=300, width=128, height=96, audio=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sepconv_cli", "interpolate", str(video), "--out", str(tmp_path / "frames/"),
         "--factor", "8", "--weights", str(flowsep_weights)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)},
    )
    # Interrupt once frames are being written into the temporary folder.
    code, stderr = interrupt_when(
        proc, lambda: any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob(".frames.partial-*")))
    assert code == 130
    assert interrupted_cleanly(stderr)
    assert not (tmp_path / "frames").exists() and not list(tmp_path.glob(".*partial*"))
