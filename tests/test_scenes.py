from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sepconv_cli import scenes
from sepconv_cli.pipeline import interpolate_video
from tests.media import make_video


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    warm = (rng.random((48, 64, 3)) * 120 + 120).astype(np.uint8)
    cold = (rng.random((48, 64, 3)) * 80).astype(np.uint8)
    return [np.roll(warm, 3 * i, axis=1) for i in range(4)] + [np.roll(cold, 3 * i, axis=1) for i in range(3)]


def test_pan_is_not_a_cut_and_a_change_of_scene_is() -> None:
    frames = _frames()
    assert not scenes.is_cut(frames[0], frames[1])
    assert scenes.is_cut(frames[3], frames[4])
    assert scenes.histogram_distance(frames[0], frames[0]) == 0


def test_detector_agrees_with_is_cut_and_computes_each_histogram_once(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _frames()
    expected = [scenes.is_cut(a, b) for a, b in zip(frames, frames[1:])]
    calls = []
    original = scenes.colour_histogram
    monkeypatch.setattr(scenes, "colour_histogram", lambda f: calls.append(1) or original(f))
    detect = scenes.CutDetector()
    assert [detect(a, b) for a, b in zip(frames, frames[1:])] == expected == [False] * 3 + [True] + [False] * 2
    assert len(calls) == len(frames)
    # A frame that merely looks like the last one is not taken for it.
    assert detect(frames[0].copy(), frames[1]) is False and len(calls) == len(frames) + 2


def test_the_pipeline_histograms_each_frame_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_video(tmp_path / "in.mp4", frames=9, audio=False)
    calls = []
    original = scenes.colour_histogram
    monkeypatch.setattr(scenes, "colour_histogram", lambda f: calls.append(1) or original(f))
    interpolate_video(source, tmp_path / "out.mp4", lambda a, b: (a + b) / 2)
    assert len(calls) == 9
