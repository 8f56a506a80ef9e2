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


def test_auto_precision_is_bf16_only_on_a_cpu_that_has_it(tiny_sepconv: torch.nn.Module,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda native=native: native)
        assert Interpolator(tiny_sepconv, device="cpu", precision="auto").precision == expected
        assert engine.resolve_precision("auto", torch.device("cuda")) == "fp32"
        for asked in ("fp32", "bf16", "fp16"):  # an explicit choice is kept as it is
            assert engine.resolve_precision(asked, torch.device("cpu")) == asked
    assert Interpolator(tiny_sepconv, device="cpu").precision == "fp32"  # the library's default


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


# -- prefetching the next pair's DIS flows -------------------------------------------------


def _quadratic_flowsep() -> torch.nn.Module:
    from sepconv_cli.models.flowsep import ALPHA_SCALE, FlowSep, FlowSepConfig

    torch.manual_seed(0)
    model = FlowSep(FlowSepConfig(channels=(4, 8, 8, 8), quadratic=True))
    with torch.no_grad():
        model.head.bias[-2:] = 1.0 / ALPHA_SCALE  # follow the four-frame candidate: its flows count
    return model


class _Recording(Interpolator):
    """An interpolator that keeps what ``at`` returned (``midpoint`` goes through it)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.outputs: list[torch.Tensor] = []

    def at(self, *args: object, **kwargs: object) -> torch.Tensor:  # type: ignore[override]
        output = super().at(*args, **kwargs)  # type: ignore[arg-type]
        self.outputs.append(output)
        return output


def _counting_dis(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0,
                  fail_in: tuple[str, ...] = ()) -> list[tuple[str, bytes]]:
    """Replace ``flow._one_way`` by one that records (thread name, the flow's frames) per
    call, waits ``delay`` s (so the two threads overlap) and fails in the threads named."""
    import hashlib
    import threading
    import time

    from sepconv_cli import flow

    real = flow._one_way
    calls: list[tuple[str, bytes]] = []

    def one_way(grey_a, grey_b, max_width):  # noqa: ANN001, ANN202 - flow._one_way's
        thread = threading.current_thread().name
        calls.append((thread, hashlib.blake2b(grey_a.tobytes() + grey_b.tobytes()).digest()))
        if thread in fail_in:
            raise RuntimeError(f"DIS failed in {thread}")
        time.sleep(delay)
        return real(grey_a, grey_b, max_width)

    monkeypatch.setattr(flow, "_one_way", one_way)
    return calls


def _stream(tmp_path: Path, interpolator: Interpolator, mode: str) -> None:
    from sepconv_cli.pipeline import VideoOptions, interpolate_video, retime_video
    from tests.media import make_video

    src = tmp_path / "in.mp4"
    if not src.exists():
        make_video(src, frames=8, audio=False)
    out = tmp_path / f"out-{mode}-{interpolator.flow_prefetch}.mkv"
    if mode == "fps":  # 25 → 60 fps: several frames per pair, in batches across pairs
        retime_video(src, out, interpolator.at, 60, options=VideoOptions(preset="ultrafast", batch_size=2, overwrite=True))
    else:
        interpolate_video(src, out, interpolator.midpoint, options=VideoOptions(preset="ultrafast", overwrite=True))


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("mode", ["factor", "fps"])
def test_a_stream_with_flow_prefetch_gives_exactly_the_frames_without(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    from sepconv_cli.flow import PREFETCH_THREAD

    calls = _counting_dis(monkeypatch, delay=0.01)
    model = _quadratic_flowsep()
    outputs = {}
    for prefetch in (False, True):
        interpolator = _Recording(model, device="cpu", flow_prefetch=prefetch)
        assert interpolator.prefetches is prefetch
        _stream(tmp_path, interpolator, mode)
        interpolator.close()
        outputs[prefetch] = torch.cat(interpolator.outputs)
    assert torch.equal(outputs[True], outputs[False])
    assert any(thread == PREFETCH_THREAD for thread, _ in calls)  # the prefetch did run


@pytest.mark.usefixtures("one_torch_thread")
def test_prefetch_keeps_two_dis_calls_a_pair_and_computes_no_flow_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sepconv_cli.flow import PREFETCH_THREAD

    # The slow DIS keeps both threads inside it at once, so they race for the same flows.
    calls = _counting_dis(monkeypatch, delay=0.02)
    interpolator = Interpolator(_quadratic_flowsep(), device="cpu")
    _stream(tmp_path, interpolator, "factor")
    interpolator.close()
    pairs = 7  # 8 frames
    assert len(calls) == 2 * pairs  # each pair's two flows; its neighbour flows are the neighbours' own
    assert len({flow for _, flow in calls}) == len(calls)
    assert PREFETCH_THREAD in {thread for thread, _ in calls}


def test_the_caller_waits_for_a_flow_the_background_is_computing(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import numpy as np

    from sepconv_cli import flow

    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def one_way(grey_a, grey_b, max_width):  # noqa: ANN001, ANN202
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == flow.PREFETCH_THREAD:
            started.set()
            release.wait(10)
        return np.full((*grey_a.shape, 2), len(calls), np.float32)

    monkeypatch.setattr(flow, "_one_way", one_way)
    memo = flow.FlowMemo()
    a, b = flow.greys(torch.cat([_textured(16, 16, 0), _textured(16, 16, 1)]))
    memo.prefetch(lambda: [(a, b)])
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    result = memo([a], [b])  # asked for while the background is inside DIS for it
    assert calls == [flow.PREFETCH_THREAD] and float(result.flatten()[0]) == 1.0
    memo.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_failed_prefetch_is_computed_by_the_caller_and_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    from sepconv_cli.flow import PREFETCH_THREAD, Surroundings

    before, a, b, after = (_textured(48, 64, seed) for seed in range(4))
    around = Surroundings(before, after, torch.ones(1), torch.ones(1), torch.ones(1))
    expected = Interpolator(_quadratic_flowsep(), device="cpu", flow_prefetch=False).at(a, b, 0.5, around)
    calls = _counting_dis(monkeypatch, fail_in=(PREFETCH_THREAD,))
    interpolator = Interpolator(_quadratic_flowsep(), device="cpu")
    with caplog.at_level(logging.WARNING, logger="sepconv_cli.flow"):
        interpolator.prefetch(lambda: (a, b, around))
        deadline = time.monotonic() + 10
        while len(calls) < 4 and time.monotonic() < deadline:  # all four flows tried in the background
            time.sleep(0.01)
        assert torch.equal(interpolator.at(a, b, 0.5, around), expected)
    interpolator.close()
    background = [flow for thread, flow in calls if thread == PREFETCH_THREAD]
    foreground = [flow for thread, flow in calls if thread != PREFETCH_THREAD]
    assert len(background) == 4 and sorted(foreground) == sorted(background)  # each recomputed once
    # One warning for the memo, not one a flow.
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "RuntimeError" in caplog.text


@pytest.mark.usefixtures("one_torch_thread")
def test_when_the_caller_fails_too_its_error_carries_the_prefetchs(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from sepconv_cli import flow
    from sepconv_cli.flow import PREFETCH_THREAD

    a, b = _textured(48, 64, 0), _textured(48, 64, 1)
    tried = threading.Event()

    def one_way(grey_a, grey_b, max_width):  # noqa: ANN001, ANN202
        thread = threading.current_thread().name
        if thread == PREFETCH_THREAD:
            tried.set()
        raise RuntimeError(f"DIS failed in {thread}")

    monkeypatch.setattr(flow, "_one_way", one_way)
    interpolator = Interpolator(_quadratic_flowsep(), device="cpu")
    interpolator.prefetch(lambda: (a, b, None))
    assert tried.wait(10)
    with pytest.raises(RuntimeError, match="failed in MainThread") as caught:
        interpolator.at(a, b, 0.5)
    assert f"failed in {PREFETCH_THREAD}" in str(caught.value.__context__)
    interpolator.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_without_hints_the_engine_starts_no_thread_and_computes_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from sepconv_cli.flow import PREFETCH_THREAD, Surroundings

    calls = _counting_dis(monkeypatch)
    frames = [_textured(48, 64, seed) for seed in range(6)]
    interpolator = Interpolator(_quadratic_flowsep(), device="cpu")
    for i in range(1, 4):  # pairs (1, 2), (2, 3), (3, 4), each with the frames around it
        around = Surroundings(frames[i - 1], frames[i + 2], torch.ones(1), torch.ones(1), torch.ones(1))
        interpolator.at(frames[i], frames[i + 1], 0.5, around)
    # 4 flows for the first pair, then 2 a pair: the rest are the neighbouring pairs' own.
    assert len(calls) == 4 + 2 + 2 and len({flow for _, flow in calls}) == len(calls)
    assert {thread for thread, _ in calls} == {"MainThread"}
    assert PREFETCH_THREAD not in {thread.name for thread in threading.enumerate()}


def test_prefetch_is_a_no_op_for_models_without_a_flow_memo(tiny_sepconv: torch.nn.Module) -> None:
    import threading

    from sepconv_cli.flow import PREFETCH_THREAD
    from sepconv_cli.models.flowsep import FlowSep, FlowSepConfig

    linear = Interpolator(FlowSep(FlowSepConfig(channels=(4, 8, 8, 8))), device="cpu")
    for interpolator in (Interpolator(tiny_sepconv, device="cpu"), linear):
        assert not interpolator.prefetches
        interpolator.prefetch(lambda: pytest.fail("called"))  # type: ignore[arg-type, return-value]
    assert PREFETCH_THREAD not in {thread.name for thread in threading.enumerate()}


def test_the_prefetch_thread_ends_with_close_and_with_its_interpolator(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import threading
    import time

    from sepconv_cli.flow import PREFETCH_THREAD

    _counting_dis(monkeypatch)
    a, b = _textured(48, 64, 0), _textured(48, 64, 1)

    def running() -> bool:
        return PREFETCH_THREAD in {thread.name for thread in threading.enumerate()}

    interpolator = Interpolator(_quadratic_flowsep(), device="cpu")
    interpolator.prefetch(lambda: (a, b, None))
    assert running()
    interpolator.close()
    assert not running()
    interpolator.prefetch(lambda: (a, b, None))  # starts again after a close
    assert running()
    del interpolator
    gc.collect()
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not running()


# -- each frame of a stream converted and greyed once ----------------------------------------


def _counting_conversions(monkeypatch: pytest.MonkeyPatch) -> tuple[list[bytes], list[bytes]]:
    """Record a digest of every frame converted to a tensor and of every image greyed for DIS,
    by any path (the old conversion's name in ``schedules`` too)."""
    import hashlib

    from sepconv_cli import flow, frame_cache, schedules

    converted: list[bytes] = []
    greyed: list[bytes] = []
    real_tensor, real_grey = frame_cache.to_tensor, flow._grey

    def to_tensor(rgb):  # noqa: ANN001, ANN202 - frame_cache.to_tensor's
        converted.append(hashlib.blake2b(rgb.tobytes()).digest())
        return real_tensor(rgb)

    def grey(frames):  # noqa: ANN001, ANN202 - flow._grey's
        images = real_grey(frames)
        greyed.extend(hashlib.blake2b(image.tobytes()).digest() for image in images)
        return images

    for module in (frame_cache, schedules):
        monkeypatch.setattr(module, "to_tensor", to_tensor)
    monkeypatch.setattr(flow, "_grey", grey)
    return converted, greyed


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("mode", ["factor", "fps"])
def test_a_stream_converts_and_greys_each_frame_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, prefetch: bool) -> None:
    from sepconv_cli.frame_cache import FrameCache

    _counting_dis(monkeypatch, delay=0.01 if prefetch else 0.0)  # the two threads overlap
    converted, greyed = _counting_conversions(monkeypatch)
    held: list[int] = []
    real_advance = FrameCache.advance

    def advance(self: FrameCache, frames: object) -> None:
        real_advance(self, frames)  # type: ignore[arg-type]
        held.append(len(self))

    monkeypatch.setattr(FrameCache, "advance", advance)
    interpolator = Interpolator(_quadratic_flowsep(), device="cpu", flow_prefetch=prefetch)
    _stream(tmp_path, interpolator, mode)
    interpolator.close()
    frames = 8  # every pair of the 8 frames has new frames between it, so every frame is read
    assert len(converted) == frames and len(set(converted)) == frames
    assert len(greyed) == frames and len(set(greyed)) == frames
    # No more frames than the stream holds: a batch of pairs with the frames around it, and
    # with the prefetch the next batch too (batch_size 1 for "factor", 2 for "fps").
    batch = 1 if mode == "factor" else 2
    assert held and max(held) <= (2 * batch if prefetch else batch) + 3


@pytest.mark.usefixtures("one_torch_thread")
def test_a_stream_gives_what_at_gives_on_frames_converted_one_by_one(tmp_path: Path) -> None:
    """The stream's cached, lent frames and greys change nothing: each new frame is, bit for
    bit, ``at`` on the pair and its neighbours converted as before the cache (a stack of
    per-frame conversions), the flows computed afresh."""
    import numpy as np

    from sepconv_cli.flow import Surroundings
    from sepconv_cli.video import FrameReader, probe

    def old_tensor(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1).div_(255.0)

    model = _quadratic_flowsep()
    streamed = _Recording(model, device="cpu")
    _stream(tmp_path, streamed, "factor")
    streamed.close()
    src = tmp_path / "in.mp4"
    with FrameReader(src, probe(src)) as reader:
        rgb = [frame.rgb for frame in reader]
    frames = [torch.stack([old_tensor(image)]) for image in rgb]
    expected = []
    for i in range(len(frames) - 1):
        inner = 0 < i < len(frames) - 2  # the first and last pairs have no frame before / after
        around = Surroundings(frames[i - 1] if inner else frames[i], frames[i + 2] if inner else frames[i + 1],
                              torch.ones(1), torch.ones(1), torch.ones(1) if inner else torch.zeros(1))
        expected.append(Interpolator(model, device="cpu", flow_prefetch=False).at(frames[i], frames[i + 1], 0.5, around))
    assert len(streamed.outputs) == len(expected)
    assert all(torch.equal(got, want) for got, want in zip(streamed.outputs, expected))


@pytest.mark.usefixtures("one_torch_thread")
def test_at_takes_the_greys_it_is_given_and_greys_nothing_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from sepconv_cli import flow
    from sepconv_cli.flow import BatchGreys, Surroundings

    before, a, b, after = (_textured(48, 64, seed) for seed in range(4))
    around = Surroundings(before, after, torch.ones(1), torch.ones(1), torch.ones(1))
    model = _quadratic_flowsep()
    expected = Interpolator(model, device="cpu", flow_prefetch=False).at(a, b, 0.5, around)
    made = BatchGreys(flow.greys(a), flow.greys(b), flow.greys(before), flow.greys(after))  # type: ignore[arg-type]
    _, greyed = _counting_conversions(monkeypatch)
    interpolator = Interpolator(model, device="cpu", flow_prefetch=False)
    assert interpolator.takes_greys
    assert torch.equal(interpolator.at(a, b, 0.5, around, greys=made), expected)
    assert greyed == []
    with pytest.raises(ValueError, match="no neighbour greys"):
        interpolator.at(a, b, 0.5, around, greys=BatchGreys(made.first, made.second, [None], [None]))
    with pytest.raises(ValueError, match="rows"):
        interpolator.at(a, b, 0.5, around, greys=BatchGreys([], [], [], []))
