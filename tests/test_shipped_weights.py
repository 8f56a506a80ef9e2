"""The shipped default weights: present, code-free, small, and at least as good as the flow baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.data.synthetic import SceneConfig, SceneRenderer
from sepconv_cli.flow import baseline
from sepconv_cli.models.registry import default_weights, load_weights, read_weights_file
from tests.media import decode_rgb, make_video
from tests.test_train import texture

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "flowsep.pt"


@pytest.fixture(autouse=True)
def shipped_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEPCONV_WEIGHTS_DIR", raising=False)


def test_default_weights_ship_load_without_code_and_are_small() -> None:
    assert default_weights("flowsep") == WEIGHTS
    assert WEIGHTS.stat().st_size < 8 * 2**20
    payload = read_weights_file(WEIGHTS)  # torch.load(weights_only=True) inside
    assert payload["model"] == "flowsep" and payload["metadata"].get("step", 0) > 0
    model = load_weights(WEIGHTS)
    assert model.any_time and not model.training
    assert model.head.weight.abs().sum() > 0  # trained, not the zero-initialised head


# The README's claim is "+0.11 dB on average" over the flow baseline on real clips. On these
# scenes the shipped weights score +0.31 dB (worst scene -0.03 dB), while the untrained
# baseline they start from (the head scaled by 1e-6) scores +0.0015 dB: 0.1 dB tells them apart
# with room on both sides.
MARGIN_DB = 0.1
WORST_SCENE_DB = -0.1


def test_shipped_model_beats_flow_by_the_readme_margin_on_large_motion() -> None:
    """A regression guard: procedural scenes with up to 40 px of motion, none seen in training."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    photos = [texture(rng, 192) for _ in range(4)]
    from sepconv_cli.data.synthetic import PhotoBank

    config = SceneConfig(size=128, max_motion=40, effects=False, static_fraction=0)
    scenes = SceneRenderer(PhotoBank.from_arrays(photos, side=192), config, device="cpu").render(range(12), seed=99)
    frames = scenes.frames.mul(255).round().div(255)
    model = load_weights(WEIGHTS)

    def psnr(prediction: torch.Tensor, truth: torch.Tensor) -> float:
        error = (prediction.clamp(0, 1).mul(255).round() - truth.mul(255)).pow(2).mean(dim=(1, 2, 3))
        return 10 * torch.log10(255**2 / error.clamp_min(1e-10))  # per scene

    with torch.no_grad():
        ours = psnr(model(frames[:, 0], frames[:, 2]), frames[:, 1])
        flow = psnr(baseline(frames[:, 0], frames[:, 2]), frames[:, 1])
    gain = ours - flow
    assert float(gain.mean()) > MARGIN_DB, gain
    assert float(gain.min()) > WORST_SCENE_DB, gain


def test_readme_first_command_runs_on_shipped_weights(tmp_path: Path) -> None:
    """``sepconv interpolate video.mp4 --out 2x.mp4`` with no model or weights flags."""
    video = make_video(tmp_path / "video.mp4", frames=4, width=96, height=64)
    result = CliRunner().invoke(cli, ["interpolate", str(video), "--out", str(tmp_path / "2x.mp4"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(decode_rgb(tmp_path / "2x.mp4")) == 8
