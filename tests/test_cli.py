"""The ``sepconv`` command as a user runs it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.models.registry import build_model, save_weights
from tests.conftest import TINY_DSEPCONV, TINY_SEPCONV
from tests.media import make_video


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(build_model("sepconv", TINY_SEPCONV), path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "pan.mp4", width=64, height=48, frames=8)


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_interpolate_doubles_the_frame_rate(tmp_path: Path, video: Path, weights: Path) -> None:
    out = tmp_path / "2x.mp4"
    code, output = run("interpolate", video, "--out", out, "--weights", weights, "--device", "cpu")
    assert code == 0, output
    assert "8 → 16 frames" in output
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 50
        assert sum(1 for _ in container.decode(stream)) == 16
        assert len(container.streams.audio) == 1
    assert not list(tmp_path.glob(".*partial*"))


def test_default_output_name_and_factor_4(tmp_path: Path, weights: Path) -> None:
    source = make_video(tmp_path / "clip.mp4", frames=5, audio=False)
    code, output = run("interpolate", source, "--weights", weights, "--factor", "4", "--quiet")
    assert code == 0, output
    assert output == ""
    with av.open(str(tmp_path / "clip.4x.mp4")) as container:
        assert container.streams.video[0].average_rate == 100
        assert sum(1 for _ in container.decode(video=0)) == 20


def test_dsepconv_weights_run_through_the_same_pipeline(tmp_path: Path, video: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "d.pt"
    save_weights(build_model("dsepconv", TINY_DSEPCONV), path)
    out = tmp_path / "d.mkv"
    code, output = run("interpolate", video, "-o", out, "--model", "dsepconv", "--weights", path, "--lossless")
    assert code == 0, output
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "ffv1"
        assert sum(1 for _ in container.decode(video=0)) == 16


@pytest.mark.parametrize(
    ("case", "expected_code", "message"),
    [
        ("missing input", 3, "not found"),
        ("not a video", 3, "not a video"),
        ("output is input", 4, "is the input video"),
        ("output exists", 4, "--overwrite"),
        ("unwritable folder", 4, "folder"),
        ("corrupt weights", 5, "not a readable weights file"),
        ("weights of another model", 5, "not 'sepconv'"),
        ("no default weights", 5, "--weights"),
        ("cuda without gpu", 6, "no CUDA GPU"),
    ],
)
def test_bad_input_is_one_line_and_a_distinct_exit_code(
    tmp_path: Path, video: Path, weights: Path, monkeypatch: pytest.MonkeyPatch,
    case: str, expected_code: int, message: str,
) -> None:
    if case == "cuda without gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("SEPCONV_WEIGHTS_DIR", str(tmp_path / "no-weights-here"))
    source, out, chosen = video, tmp_path / "out.mp4", weights
    extra: list[str] = []
    if case == "missing input":
        source = tmp_path / "nope.mp4"
    elif case == "not a video":
        source = tmp_path / "notes.mp4"
        source.write_text("just text\n")
    elif case == "output is input":
        source = tmp_path / "in.mp4"
        source.write_bytes(video.read_bytes())
        out = source
    elif case == "output exists":
        out.write_bytes(b"keep me")
    elif case == "unwritable folder":
        # A missing folder is made (as a batch's is); one that cannot be is an error.
        (tmp_path / "a-file").write_text("not a folder\n")
        out = tmp_path / "a-file" / "sub" / "out.mp4"
    elif case == "corrupt weights":
        chosen = tmp_path / "bad.pt"
        chosen.write_bytes(weights.read_bytes()[:200])
    elif case == "weights of another model":
        # Without --model the file's own network is used; with it, a mismatch is an error.
        chosen = tmp_path / "d.pt"
        save_weights(build_model("dsepconv", TINY_DSEPCONV), chosen)
        extra = ["--model", "sepconv"]
    elif case == "cuda without gpu":
        extra = ["--device", "cuda"]
    args = ["interpolate", source, "--out", out, *extra]
    if case != "no default weights":
        args += ["--weights", chosen]
    before = source.read_bytes() if source.exists() else None
    code, output = run(*args)
    assert code == expected_code, output
    assert message in output
    assert output.startswith("error: ") and output.count("\n") == 1 and "Traceback" not in output
    if before is not None:
        assert source.read_bytes() == before
    if case == "output exists":
        assert out.read_bytes() == b"keep me"
    elif case != "output is input":
        assert not out.exists()


def test_the_installed_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sepconv_cli", "interpolate", str(tmp_path / "missing.mp4"), "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 3
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_help_lists_every_command() -> None:
    code, output = run("--help")
    assert code == 0
    for command in ("interpolate", "prepare", "train", "eval"):
        assert command in output


def test_forced_compiled_kernel_that_is_unavailable_is_a_one_line_device_error(
    tmp_path: Path, video: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sepconv_cli.ext import _build

    monkeypatch.setattr(_build, "_loaded", {})
    monkeypatch.setenv("SEPCONV_NO_EXT", "1")
    out = tmp_path / "2x.mp4"
    code, output = run("interpolate", video, "--out", out, "--weights", weights, "--device", "cpu", "--op-impl", "compiled")
    assert code == 6, output
    assert output.startswith("error: op implementation 'compiled': ") and output.count("\n") == 1
    assert "Traceback" not in output
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_quiet_keeps_the_one_off_kernel_build_message_away(
    tmp_path: Path, video: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from sepconv_cli.ext import _build

    # The build is cached; pretend it is not, so the message would be logged.
    monkeypatch.setattr(_build, "_loaded", {})
    monkeypatch.setattr(_build, "_build_directory", lambda name: tmp_path / "never-built")
    monkeypatch.setattr(logging.getLogger("sepconv_cli"), "level", logging.NOTSET)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("sepconv_cli").addHandler(handler)
    try:
        code, output = run("interpolate", video, "--out", tmp_path / "q.mp4", "--weights", weights, "--quiet")
        assert code == 0 and output == ""
        assert not [r for r in records if "compiling" in r.getMessage()]
        monkeypatch.setattr(_build, "_loaded", {})
        code, output = run("interpolate", video, "--out", tmp_path / "v.mp4", "--weights", weights)
        assert code == 0, output
        assert [r for r in records if "compiling the CPU kernels" in r.getMessage()]
    finally:
        logging.getLogger("sepconv_cli").removeHandler(handler)
