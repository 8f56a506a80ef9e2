from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from sepconv_cli import engine
from sepconv_cli.engine import Interpolator, Tiling, count_tiles, resolve_device
from sepconv_cli.errors import DeviceError
from sepconv_cli.models.blocks import joint_normalisation


def _textured(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8 + 1, width // 8 + 1, generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def test_pads_to_the_stride_and_crops_back(tiny_sepconv: torch.nn.Module) -> None:
    a, b = _textured(37, 45, 0), _textured(37, 45, 1)
    result = Interpolator(tiny_sepconv, device="cpu").midpoint(a, b)
    assert result.shape == (1, 3, 37, 45) and result.dtype == torch.float32
    padded = [F.pad(x, [0, 64 - 45, 0, 64 - 37], mode="replicate") for x in (a, b)]
    with torch.no_grad():
        expected = tiny_sepconv(*padded, joint_normalisation(a, b))[..., :37, :45].clamp(0, 1)
    torch.testing.assert_close(result, expected)


def test_tiled_equals_untiled_within_one_level(tiny_sepconv: torch.nn.Module) -> None:
    a, b = _textured(200, 260, 2), _textured(200, 260, 3)
    whole = Interpolator(tiny_sepconv, device="cpu", tiling=Tiling(tile=0)).midpoint(a, b)
    tiling = Tiling(tile=64, context=96, max_pixels=1)
    assert count_tiles(200, 260, tiling) == 4 * 5
    tiled = Interpolator(tiny_sepconv, device="cpu", tiling=tiling).midpoint(a, b)
    assert (tiled - whole).abs().max() <= 1 / 255


def test_batches_equal_single_pairs(tiny_sepconv: torch.nn.Module) -> None:
    a, b = torch.cat([_textured(40, 40, s) for s in (4, 5)]), torch.cat([_textured(40, 40, s) for s in (6, 7)])
    interpolator = Interpolator(tiny_sepconv, device="cpu")
    batched = interpolator.midpoint(a, b)
    single = torch.cat([interpolator.midpoint(a[i : i + 1], b[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:this CPU has no native bf16")
@pytest.mark.parametrize("model", ["tiny_sepconv", "tiny_dsepconv"])
def test_bf16_on_cpu_is_close_to_fp32(model: str, request: pytest.FixtureRequest) -> None:
    network = request.getfixturevalue(model)
    a, b = _textured(32, 64, 8), _textured(32, 64, 9)
    fp32 = Interpolator(network, device="cpu").midpoint(a, b)
    bf16 = Interpolator(network, device="cpu", precision="bf16").midpoint(a, b)
    assert (bf16 - fp32).abs().mean() < 0.02


def test_bf16_on_a_cpu_without_it_warns(tiny_sepconv: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        Interpolator(tiny_sepconv, device="cpu", precision="bf16")
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Interpolator(tiny_sepconv, device="cpu", precision="bf16")


@pytest.mark.parametrize("model", ["tiny_sepconv", "tiny_dsepconv"])
def test_channels_last_matches_contiguous(model: str, request: pytest.FixtureRequest) -> None:
    network = request.getfixturevalue(model)
    a, b = _textured(64, 96, 10), _textured(64, 96, 11)
    fast = Interpolator(network, device="cpu")  # the CPU default
    assert fast.channels_last and network.unet.encoders[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    nhwc = fast.midpoint(a, b)
    nchw = Interpolator(network, device="cpu", channels_last=False).midpoint(a, b)
    assert network.unet.encoders[0][0].weight.is_contiguous()
    torch.testing.assert_close(nhwc, nchw, atol=1e-5, rtol=0)


def test_device_errors() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("where", ["interpolate", "train"])
def test_no_gpu_points_to_a_readme_section_that_exists(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    from sepconv_cli import training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    resolve = engine.resolve_device if where == "interpolate" else training.resolve_device
    with pytest.raises(DeviceError, match="no CUDA GPU") as caught:
        resolve("cuda")
    section = re.search(r"section '([^']+)'", str(caught.value)).group(1)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    headings, in_code = [], False
    for line in readme.splitlines():
        in_code ^= line.startswith("```")
        if not in_code and line.startswith("#"):
            headings.append(line.lstrip("#").strip())
    assert section in headings, (section, headings)


def test_empty_batch(tiny_sepconv: torch.nn.Module) -> None:
    empty = torch.empty(0, 3, 16, 16)
    assert Interpolator(tiny_sepconv, device="cpu").midpoint(empty, empty).shape == (0, 3, 16, 16)
