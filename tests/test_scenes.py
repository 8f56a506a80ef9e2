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


def _scene(seed: int, height: int = 180, width: int = 320) -> np.ndarray:
    """A smooth, photo-like frame: coarse noise enlarged (layout at every scale a shift sees)."""
    import cv2

    coarse = np.random.default_rng(seed).random((height // 15, width // 15, 3)).astype(np.float32)
    return (cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 160 + 40).astype(np.uint8)


def test_a_cut_between_shots_of_one_palette_is_found_by_its_layout() -> None:
    shot = _scene(1)
    # The next shot: the same colours rearranged, a little brighter (as Megamind.avi's cuts).
    other = np.ascontiguousarray(shot[::-1, ::-1]).astype(np.int16) + 12
    other = other.clip(0, 255).astype(np.uint8)
    distance = scenes.histogram_distance(shot, other)
    assert scenes.DEFAULT_THRESHOLD / 4 < distance < scenes.DEFAULT_THRESHOLD  # colours alone miss it
    assert scenes.is_cut(shot, other)
    assert scenes.layout_similarity(scenes.layout_thumbnail(shot), scenes.layout_thumbnail(other)) < 0.5


def test_a_fast_pan_with_a_change_of_exposure_is_not_a_cut() -> None:
    wide = _scene(2, width=400)
    first = wide[:, :320]
    # 10 % of the width in one frame, and brighter: the histograms differ as much as across a cut above.
    second = (wide[:, 32:352].astype(np.int16) + 14).clip(0, 255).astype(np.uint8)
    assert scenes.histogram_distance(first, second) > scenes.DEFAULT_THRESHOLD / 4
    assert scenes.layout_similarity(scenes.layout_thumbnail(first), scenes.layout_thumbnail(second)) > 0.9
    assert not scenes.is_cut(first, second)
    # A flat frame (a fade to black) has no layout: only its colours decide.
    black = np.full_like(first, 3)
    assert scenes.layout_similarity(scenes.layout_thumbnail(first), scenes.layout_thumbnail(black)) == 1.0


def test_the_detector_thumbnails_each_frame_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    shot = _scene(3)
    rearranged = (np.ascontiguousarray(shot[::-1, ::-1]).astype(np.int16) + 12).clip(0, 255).astype(np.uint8)
    brighter = (rearranged.astype(np.int16) + 14).clip(0, 255).astype(np.uint8)
    frames = [shot, shot, rearranged, brighter, brighter]
    expected = [scenes.is_cut(a, b) for a, b in zip(frames, frames[1:])]
    assert expected == [False, True, False, False]
    calls = []
    original = scenes.layout_thumbnail
    monkeypatch.setattr(scenes, "layout_thumbnail", lambda f: calls.append(1) or original(f))
    detect = scenes.CutDetector()
    assert [detect(a, b) for a, b in zip(frames, frames[1:])] == expected
    # Layouts compared for the 2nd and 3rd pairs only (the others' colours barely move):
    # shot, rearranged and brighter each thumbnailed once.
    assert len(calls) == 3
