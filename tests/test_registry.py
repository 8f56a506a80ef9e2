from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sepconv_cli.errors import WeightsError
from sepconv_cli.models.registry import (
    build_model,
    default_weights,
    dequantise,
    load_weights,
    quantise,
    save_weights,
)


def test_round_trip_restores_model_and_config(tmp_path: Path, tiny_sepconv: torch.nn.Module) -> None:
    path = tmp_path / "w.pt"
    save_weights(tiny_sepconv, path, quantised=False, metadata={"steps": 3})
    loaded = load_weights(path, model="sepconv")
    assert loaded.config == tiny_sepconv.config
    for key, value in tiny_sepconv.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_int8_weights_are_close_and_small(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("sepconv", {"kernel_size": 5, "channels": [16, 32, 64, 64, 64]}).eval()
    full, small = tmp_path / "full.pt", tmp_path / "int8.pt"
    save_weights(model, full, quantised=False)
    save_weights(model, small, quantised=True)
    assert small.stat().st_size < 0.35 * full.stat().st_size
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(a, b)
        approximate = load_weights(small)(a, b)
    assert (approximate - reference).abs().max() < 2 / 255


def test_quantise_is_per_output_channel() -> None:
    weight = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8).view(8, 1, 1, 1)
    restored = dequantise(quantise(weight))
    # Each channel keeps its own relative precision, even the tiny ones.
    relative = (restored - weight).abs().amax(dim=(1, 2, 3)) / weight.abs().amax(dim=(1, 2, 3))
    assert relative.max() <= 0.5 / 127 + 1e-6


def test_bad_weights_files_are_clear_errors(tmp_path: Path, tiny_sepconv: torch.nn.Module) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="not a readable weights file"):
        load_weights(garbage)
    plain = tmp_path / "state_dict.pt"
    torch.save(tiny_sepconv.state_dict(), plain)
    with pytest.raises(WeightsError, match="not a sepconv weights file"):
        load_weights(plain)
    good = tmp_path / "good.pt"
    save_weights(tiny_sepconv, good)
    with pytest.raises(WeightsError, match="not 'dsepconv'"):
        load_weights(good, model="dsepconv")


def test_a_video_or_image_given_as_weights_is_named_for_what_it_is(tmp_path: Path) -> None:
    from tests.media import make_video

    cases = {
        make_video(tmp_path / "fake.mp4", frames=2, audio=False): "is an MP4/QuickTime video, not a weights file",
        make_video(tmp_path / "fake.mkv", frames=2, audio=False): "is a Matroska/WebM video, not a weights file",
    }
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), np.zeros((4, 4, 3), np.uint8))
    cases[png] = "is a PNG image, not a weights file"
    page = tmp_path / "flowsep.pt"
    page.write_text("<!DOCTYPE html>\n<html><body>404</body></html>\n")
    cases[page] = "is an HTML page (a failed download?), not a weights file"
    pointer = tmp_path / "lfs.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    cases[pointer] = "is a Git LFS pointer"
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cases[empty] = "is an empty file, not a weights file"
    for path, message in cases.items():
        with pytest.raises(WeightsError) as caught:
            load_weights(path)
        assert str(caught.value).startswith(f"{path} {message}"), str(caught.value)


class _Payload:  # an arbitrary object: unpickling it would run code
    pass


def test_files_that_need_code_to_load_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "sepconv-weights", "object": _Payload()}, path)
    with pytest.raises(WeightsError, match="not a readable weights file"):
        load_weights(path)


def test_mismatched_tensors_are_refused(tmp_path: Path, tiny_sepconv: torch.nn.Module) -> None:
    path = tmp_path / "w.pt"
    save_weights(tiny_sepconv, path, quantised=False)
    payload = torch.load(path, weights_only=True)
    payload["config"]["kernel_size"] = 7
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="does not match"):
        load_weights(path)


def test_missing_default_weights_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEPCONV_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="--weights"):
        default_weights("sepconv")
    (tmp_path / "sepconv.pt").write_bytes(b"x")
    assert default_weights("sepconv") == tmp_path / "sepconv.pt"
