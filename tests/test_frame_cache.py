"""``frame_cache``: a stream's frames converted to tensors and greyed once, and forgotten once passed."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import torch

from sepconv_cli import flow, frame_cache
from sepconv_cli.frame_cache import FrameCache, to_tensor
from sepconv_cli.video_types import Frame


def _old_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """The conversion before the cache (``schedules.to_tensor``), for the bit-for-bit check."""
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1).div_(top)


def test_to_tensor_gives_the_old_conversions_values_bit_for_bit() -> None:
    for dtype, count in ((np.uint8, 256), (np.uint16, 65536)):
        values = np.arange(count, dtype=dtype)
        rgb = np.stack([values, values[::-1], np.roll(values, 7)], axis=-1).reshape(-1, 256, 3)
        new = to_tensor(rgb)
        assert new.is_contiguous() and new.dtype == torch.float32 and new.shape == (3, count // 256, 256)
        assert torch.equal(new, torch.stack([_old_to_tensor(rgb)])[0])  # as a batch of one was made


def _frame(index: int, seed: int | None = None) -> Frame:
    rgb = np.random.default_rng(index if seed is None else seed).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    return Frame(rgb, Fraction(index, 25), index, timestamp=index)


def test_each_frame_is_converted_and_greyed_once_and_the_same_one_returned(monkeypatch) -> None:
    calls: list[str] = []
    real_tensor, real_grey = frame_cache.to_tensor, flow._grey
    monkeypatch.setattr(frame_cache, "to_tensor", lambda rgb: calls.append("tensor") or real_tensor(rgb))
    monkeypatch.setattr(flow, "_grey", lambda frames: calls.append("grey") or real_grey(frames))
    cache, frame = FrameCache(), _frame(0)
    tensor, grey = cache.tensor(frame), cache.grey(frame)
    assert cache.tensor(frame) is tensor and cache.grey(frame) is grey and cache.grey_ahead(frame) is grey
    assert calls == ["tensor", "grey"]
    assert torch.equal(tensor, _old_to_tensor(frame.rgb))
    old = flow.greys(torch.stack([_old_to_tensor(frame.rgb)]))[0]
    assert grey.key == old.key and np.array_equal(grey.image, old.image)


def test_two_threads_asking_at_once_get_one_grey() -> None:
    cache, frame = FrameCache(), _frame(3)
    start = threading.Barrier(4)
    got: list[flow.Grey] = []

    def ask() -> None:
        start.wait()
        got.append(cache.grey(frame))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(grey is got[0] for grey in got)


def test_frames_the_stream_has_passed_are_forgotten_and_not_made_again_for_a_prefetch() -> None:
    cache = FrameCache()
    frames = [_frame(index) for index in range(6)]
    for frame in frames:
        cache.grey(frame)
    cache.advance(frames[3:5])
    assert len(cache) == 3  # frames 3, 4 and 5: the stream reads from 3 on
    assert cache.grey_ahead(frames[1]) is None and len(cache) == 3  # a late prefetch: nothing made
    assert cache.grey_ahead(frames[4]) is not None
    cache.advance(frames[1:2])  # never backwards
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.grey_ahead(_frame(9)) is None
