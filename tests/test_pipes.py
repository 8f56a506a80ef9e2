"""``sepconv interpolate - --out -``: y4m and NUT streams through real pipes, a reader
that leaves early, and Ctrl-C (SIGINT → exit 130) in file and pipe runs.

These run the installed command in a subprocess, as ``ffmpeg ... | sepconv ... | ffmpeg``
would, and make and check the streams with PyAV (the same FFmpeg muxers and demuxers).
"""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from sepconv_cli.cli import cli
from tests.interrupts import interrupt_when, interrupted_cleanly, pause_at, without_build_notes
from tests.media import make_video, texture

ROOT = Path(__file__).resolve().parents[1]
PIPE_FORMATS = {"y4m": "yuv4mpegpipe", "nut": "nut"}



def stream_bytes(fmt: str, frames: int = 8, width: int = 64, height: int = 48, rate: int = 25) -> tuple[bytes, list[np.ndarray]]:
    """A raw yuv420p stream as ``ffmpeg -f yuv4mpegpipe -`` / ``-f nut -`` writes it,
    and its frames as a decoder sees them (RGB)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=PIPE_FORMATS[fmt]) as out:
        stream = out.add_stream("rawvideo", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(texture(i, width, height), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buf.getvalue()
    return data, decode(data)


def decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "sepconv_cli", "interpolate", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("fmt", ["y4m", "nut"])
def test_stdin_to_stdout_round_trip_is_exact_on_the_original_frames(fmt: str, flowsep_weights: Path) -> None:
    data, originals = stream_bytes(fmt)
    result = subprocess.run(
        command("-", "--out", "-", "--format", fmt, "--weights", flowsep_weights),
        input=data, capture_output=True, timeout=300, env=env(), cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(b"YUV4MPEG2" if fmt == "y4m" else b"nut/multimedia container")
    assert "8 → 16 frames" in result.stderr.decode()
    with av.open(io.BytesIO(result.stdout)) as container:
        stream = container.streams.video[0]
        assert container.format.name == PIPE_FORMATS[fmt]
        assert stream.codec_context.name == "rawvideo" and stream.average_rate == 50
    frames = decode(result.stdout)
    assert len(frames) == 16
    for k, original in enumerate(originals):
        assert np.array_equal(frames[2 * k], original)  # passed through untouched, no RGB round trip
    assert not np.array_equal(frames[1], originals[0]) and not np.array_equal(frames[1], originals[1])


def test_video_file_to_nut_on_stdout_keeps_the_audio(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "pan.mkv", frames=6, audio=True)
    result = subprocess.run(
        command(video, "--out", "-", "--format", "nut", "--codec", "ffv1", "--weights", flowsep_weights),
        capture_output=True, timeout=300, env=env(), cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr.decode()
    with av.open(io.BytesIO(result.stdout)) as container:
        assert container.streams.video[0].codec_context.name == "ffv1"
        assert len(container.streams.audio) == 1
    assert len(decode(result.stdout)) == 12


def test_frames_to_y4m_in_process(tmp_path: Path, flowsep_weights: Path) -> None:
    import cv2

    (tmp_path / "in").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "in" / f"{i}.png"), texture(i, 64, 48)[:, :, ::-1])
    result = CliRunner().invoke(cli, ["interpolate", str(tmp_path / "in"), "--out", "-", "--weights",
                                      str(flowsep_weights), "--quiet"])
    assert result.exit_code == 0, result.output
    data = result.stdout_bytes
    assert data.startswith(b"YUV4MPEG2") and b"C444" in data[:60]  # RGB frames as 4:4:4, no chroma lost
    assert len(decode(data)) == 6


def test_a_reader_that_leaves_early_ends_the_run_cleanly(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "long.mp4", frames=200, width=128, height=96, audio=False)
    proc = subprocess.Popen(
        command(video, "--out", "-", "--format", "y4m", "--weights", flowsep_weights),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    )
    head = proc.stdout.read(100_000)
    proc.stdout.close()
    code = proc.wait(timeout=120)
    stderr = proc.stderr.read().decode()
    assert head.startswith(b"YUV4MPEG2")
    assert code == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    # A cold extension cache adds the kernel-build note first, a slow run progress lines; nothing else may be said.
    notes = [line for line in without_build_notes(stderr).splitlines() if " frames/s" not in line]
    assert notes[0].startswith("note: the reader of stdout closed it") and len(notes) == 1


def test_a_stream_that_is_not_video_is_a_one_line_input_error(flowsep_weights: Path) -> None:
    result = subprocess.run(
        command("-", "--out", "-", "--weights", flowsep_weights),
        input=b"this is not a video stream\n" * 100, capture_output=True, timeout=120, env=env(), cwd=ROOT,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 3, stderr
    assert stderr.startswith("error: the input stream stdin is not video") and stderr.count("\n") == 1
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{video}", "--out", "{tmp}/o.mp4", "--format", "nut"], "--format is for a stream on stdout"),
        (["-"], "SOURCE - (stdin) needs --out"),
        (["{video}", "--out", "-", "--codec", "libx264"], "a y4m stream holds raw frames only"),
    ],
)
def test_pipe_usage_errors(tmp_path: Path, flowsep_weights: Path, args: list[str], message: str) -> None:
    video = make_video(tmp_path / "v.mp4", frames=3, audio=False)
    argv = [a.format(video=video, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["interpolate", *argv, "--weights", str(flowsep_weights)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output and result.output.count("\n") == 1


def test_ctrl_c_exits_130_and_leaves_no_output(tmp_path: Path, flowsep_weights: Path) -> None:
    video = make_video(tmp_path / "long.mp4", frames=300, width=128, height=96, audio=False)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        command(video, "--out", out, "--factor", "8", "--weights", flowsep_weights),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    )
    # The temporary output exists once frames are being written: interrupt mid-run.
    code, stderr = interrupt_when(proc, lambda: any(tmp_path.glob(".out.partial-*")))
    assert code == 130, stderr
    assert interrupted_cleanly(stderr), stderr
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def unread(pipe: io.BufferedWriter) -> int:
    """Bytes written into ``pipe`` that its reader has not taken yet (Linux: FIONREAD on either end)."""
    return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def all_threads_sleep(pid: int) -> bool:
    """Whether every thread of process ``pid`` is asleep (state S in /proc), i.e. blocked."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            return False  # a thread that just ended
    return bool(states) and all(state == "S" for state in states)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process state from /proc")
def test_ctrl_c_while_waiting_for_stdin_exits_130(flowsep_weights: Path) -> None:
    # Enough frames to pass the reader's reordering window (8 frames) and the output's
    # 32 KB I/O buffer, so output starts; then the writer stays open and sends nothing more.
    data, _ = stream_bytes("y4m", frames=40)
    proc = subprocess.Popen(
        command("-", "--out", "-", "--weights", flowsep_weights),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    )
    written = threading.Event()

    def write() -> None:
        proc.stdin.write(data)
        proc.stdin.flush()
        written.set()

    threading.Thread(target=write, daemon=True).start()
    # The reader downstream keeps reading, as ffmpeg would.
    got = bytearray()

    def read() -> None:
        while chunk := proc.stdout.read1(65536):
            got.extend(chunk)

    threading.Thread(target=read, daemon=True).start()

    quiet = [0]

    def started() -> bool:
        # Waiting for stdin: everything written has been read from the pipe and no thread
        # of the process is running, seen on a few polls in a row (not a guessed sleep).
        if got and written.is_set() and unread(proc.stdin) == 0 and all_threads_sleep(proc.pid):
            quiet[0] += 1
        else:
            quiet[0] = 0
        return quiet[0] >= 3

    code, stderr = interrupt_when(proc, started)
    proc.stdin.close()
    assert code == 130, stderr
    assert interrupted_cleanly(stderr), stderr
    assert bytes(got).startswith(b"YUV4MPEG2")


def test_nothing_but_the_stream_reaches_stdout(tmp_path: Path, flowsep_weights: Path) -> None:
    # Something in the process prints to stdout while the stream is written (here at exit,
    # from a site hook): it must land on stderr, not inside the stream.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import atexit, sys\natexit.register(lambda: print('stray text on stdout', flush=True))\n"
    )
    data, originals = stream_bytes("y4m", frames=3)
    result = subprocess.run(
        command("-", "--out", "-", "--weights", flowsep_weights),
        input=data, capture_output=True, timeout=300, cwd=ROOT,
        env={**env(), "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}"},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"stray" not in result.stdout and "stray text on stdout" in result.stderr.decode()
    assert len(decode(result.stdout)) == 6


@pytest.mark.parametrize(
    ("event", "target"),
    [("import", "torch"), ("open", "{weights}")],
    ids=["importing-torch", "loading-weights"],
)
def test_ctrl_c_while_starting_up_is_one_line_and_130(
    tmp_path: Path, flowsep_weights: Path, event: str, target: str
) -> None:
    # Early (importing torch) or later (loading the weights): the same answer either way.
    # The process is paused at that point by a site hook, so no sleep has to guess when.
    video = make_video(tmp_path / "v.mp4", frames=200, width=128, height=96, audio=False)
    paused_env, paused = pause_at(tmp_path, env(), event, target.format(weights=flowsep_weights))
    proc = subprocess.Popen(
        command(video, "--out", tmp_path / "o.mp4", "--factor", "8", "--weights", flowsep_weights),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=paused_env, cwd=ROOT,
    )
    code, stderr = interrupt_when(proc, paused.exists)
    assert code == 130, stderr
    assert interrupted_cleanly(stderr), stderr
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob(".*partial*"))
