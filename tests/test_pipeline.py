"""``interpolate_video`` end to end, with a plain blend as the interpolator."""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sepconv_cli import pipeline, scenes
from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.pipeline import VideoOptions, interpolate_video
from sepconv_cli.video import FrameReader, VideoWarning, iter_frames, probe
from tests.media import decode_rgb, make_audio_only, make_video


def blend(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a + b) / 2


FAST = {"preset": "ultrafast"}


def run(src: Path, dst: Path, midpoint=blend, **options):
    return interpolate_video(src, dst, midpoint, options=VideoOptions(**{**FAST, **options}))


def video_pts(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.pts * s.time_base for f in c.decode(s)]


def stream_seconds(path: Path, kind: str) -> float:
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[0]
        return float(s.duration * s.time_base)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- timing ------------------------------------------------------------------------------


def test_doubles_frames_rate_keeps_duration_and_audio(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=12)
    before = digest(src)
    report = run(src, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert (report.input_frames, report.output_frames) == (12, 24)
    assert out.frames == 24 and len(decode_rgb(tmp_path / "out.mp4")) == 24
    assert out.frame_rate == Fraction(50) == report.output_rate
    one_frame = 1 / 50
    assert stream_seconds(tmp_path / "out.mp4", "video") == pytest.approx(0.48, abs=one_frame)
    assert report.output_duration == pytest.approx(0.48, abs=one_frame)
    assert out.audio_streams == 1
    assert stream_seconds(tmp_path / "out.mp4", "audio") == pytest.approx(
        stream_seconds(src, "audio"), abs=0.05
    )
    pts = video_pts(tmp_path / "out.mp4")
    assert all(a < b for a, b in zip(pts, pts[1:]))
    assert pts == [Fraction(i, 50) for i in range(24)]
    assert digest(src) == before  # the input is never modified
    assert leftovers(tmp_path) == []


def test_ntsc_rate_is_exact_rational(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=12, rate=Fraction(30000, 1001), audio=False)
    report = run(src, tmp_path / "out.mp4")
    assert probe(tmp_path / "out.mp4").frame_rate == Fraction(60000, 1001)
    assert report.output_rate == Fraction(60000, 1001)
    assert video_pts(tmp_path / "out.mp4") == [Fraction(1001, 60000) * i for i in range(24)]


def test_vfr_keeps_midpoint_timing(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=10, vfr=True, audio=False)
    src_pts = video_pts(src)
    assert len(set(b - a for a, b in zip(src_pts, src_pts[1:]))) > 1  # really irregular
    run(src, tmp_path / "out.mp4")
    out = video_pts(tmp_path / "out.mp4")
    assert len(out) == 20
    assert out[0::2] == src_pts
    assert out[1:-1:2] == [(a + b) / 2 for a, b in zip(src_pts, src_pts[1:])]
    assert all(a < b for a, b in zip(out, out[1:]))


def test_factor_4(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=8, audio=False)
    calls = []

    def mid(a, b):
        calls.append(a.shape[0])
        return blend(a, b)

    report = run(src, tmp_path / "out.mp4", midpoint=mid, factor=4)
    assert report.output_frames == 32 and probe(tmp_path / "out.mp4").frames == 32
    assert probe(tmp_path / "out.mp4").frame_rate == 100
    assert video_pts(tmp_path / "out.mp4") == [Fraction(i, 100) for i in range(32)]
    assert sum(calls) == 7 * 3  # 3 midpoints for each of the 7 pairs, recursively


def test_factor_4_positions_are_quarter_blends(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    run(src, tmp_path / "out.mkv", factor=4, lossless=True)
    got = [f.rgb.astype(float) for f in iter_frames(tmp_path / "out.mkv")]
    a, b = got[0], got[4]
    for k in (1, 2, 3):
        # only the RGB -> 4:2:0 conversion of the new frames is lossy
        assert np.abs(got[k] - (a * (4 - k) + b * k) / 4).mean() < 2.5


# -- pixel formats, tags ------------------------------------------------------------------


def test_10bit_in_10bit_out_full_precision(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=6, pix_fmt="yuv420p10le")
    seen = []

    def mid(a, b):
        seen.append(a)
        return blend(a, b)

    run(src, tmp_path / "out.mkv", midpoint=mid)
    out = probe(tmp_path / "out.mkv")
    assert (out.pix_fmt, out.bit_depth) == ("yuv420p10le", 10)
    values = seen[0] * 65535
    assert torch.allclose(values, values.round(), atol=1e-2)  # uint16 / 65535
    assert not torch.allclose(seen[0] * 255, (seen[0] * 255).round(), atol=1e-3)  # not 8-bit
    assert seen[0].dtype == torch.float32 and seen[0].shape == (1, 3, 48, 64)


def test_8bit_midpoint_input_is_uint8_scale(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    seen = []

    def mid(a, b):
        seen.append((a, b))
        return blend(a, b)

    run(src, tmp_path / "out.mp4", midpoint=mid)
    a = seen[0][0]
    assert a.dtype == torch.float32 and a.device.type == "cpu" and a.shape == (1, 3, 48, 64)
    assert 0 <= a.min() and a.max() <= 1
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-4)


def test_colour_tags_and_rotation_kept(tmp_path: Path) -> None:
    colour = {"color_range": 2, "colorspace": 1, "color_primaries": 1, "color_trc": 1}
    src = make_video(tmp_path / "in.mp4", frames=4, colour=colour, rotation=90, audio=False)
    run(src, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert (out.color_range, out.colorspace, out.color_primaries, out.color_trc) == (2, 1, 1, 1)
    assert out.rotation == 90
    # Colours survive: the middle frame is close to the blend of its neighbours.
    got = [f.astype(float) for f in decode_rgb(tmp_path / "out.mp4")]
    assert np.abs(got[1] - (got[0] + got[2]) / 2).mean() < 4


# -- cuts, lossless, batching -------------------------------------------------------------


def test_cut_repeats_earlier_frame(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=8, cut_at=4, audio=False)
    pairs = []

    def mid(a, b):
        for x, y in zip(a, b):
            pairs.append((x, y))
        return blend(a, b)

    report = run(src, tmp_path / "out.mkv", midpoint=mid, lossless=True)
    assert report.cuts == 1
    assert len(pairs) == 6  # 7 pairs, the one across the cut never blended
    for x, y in pairs:
        to8 = lambda t: (t.permute(1, 2, 0) * 255).round().byte().numpy()  # noqa: E731
        assert not scenes.is_cut(to8(x), to8(y))
    out = decode_rgb(tmp_path / "out.mkv")
    assert np.array_equal(out[7], out[6])  # frame between 3 and 4 is frame 3 again
    assert not np.array_equal(out[5], out[4])  # ordinary in-betweens are new frames
    off = run(src, tmp_path / "off.mkv", lossless=True, scene_threshold=0)
    assert off.cuts == 0


def test_lossless_round_trip_exact_on_originals(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=6, audio=False)
    report = run(src, tmp_path / "out.mkv", lossless=True)
    assert report.output_frames == 12
    out = [f.rgb for f in iter_frames(tmp_path / "out.mkv")]
    orig = [f.rgb for f in iter_frames(src)]
    for i, frame in enumerate(orig):
        assert np.array_equal(out[2 * i], frame)
    assert probe(tmp_path / "out.mkv").codec == "ffv1"


def test_batch_size_gives_same_output(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=9, audio=False)
    sizes = []

    def mid(a, b):
        sizes.append(a.shape[0])
        return blend(a, b)

    run(src, tmp_path / "one.mkv", lossless=True)
    run(src, tmp_path / "three.mkv", midpoint=mid, lossless=True, batch_size=3)
    assert max(sizes) == 3 and sum(sizes) == 8
    for a, b in zip(decode_rgb(tmp_path / "one.mkv"), decode_rgb(tmp_path / "three.mkv"), strict=True):
        assert np.array_equal(a, b)


def test_streaming_reads_ahead_only_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_video(tmp_path / "in.mp4", frames=16, audio=False)
    readers: list[FrameReader] = []

    class Spy(FrameReader):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            readers.append(self)

    monkeypatch.setattr(pipeline, "FrameReader", Spy)
    lag = []
    pairs_done = 0

    def mid(a, b):
        nonlocal pairs_done
        lag.append(readers[0].frames_read - pairs_done)
        pairs_done += a.shape[0]
        return blend(a, b)

    run(src, tmp_path / "out.mp4", midpoint=mid, batch_size=2)
    # One batch, the frame that closes it, the decode queue and the frame in the decode
    # thread's hands: bounded, while the video is twice as long.
    assert max(lag) <= 2 + 1 + pipeline._PREFETCH + 1


def test_progress_reports_every_input_frame(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=5, audio=False)
    calls = []
    interpolate_video(src, tmp_path / "out.mp4", blend, options=VideoOptions(**FAST), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 5) for i in range(1, 6)]


# -- sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(175, 143), (8, 8)])
def test_odd_and_tiny_sizes_work(tmp_path: Path, width: int, height: int) -> None:
    src = make_video(tmp_path / "in.mkv", width=width, height=height, frames=4, codec="ffv1", audio=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VideoWarning)
        report = run(src, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.frames, report.output_frames) == (width, height, 8, 8)


# -- bad input and safety -----------------------------------------------------------------


def _garbage_mp4(folder: Path) -> Path:
    src = make_video(folder / "g.mp4", frames=6, audio=False)
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    bad = folder / "garbage.mp4"
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.mp4", "not found"),
        (lambda d: (d / "text.mp4").write_text("hello\n" * 40) and d / "text.mp4", "not a video"),
        (lambda d: make_audio_only(d / "sound.m4a"), "no video stream"),
        (_garbage_mp4, "no decodable video frames"),
        (lambda d: make_video(d / "one.mp4", frames=1), "only one video frame"),
    ],
    ids=["missing", "text", "audio-only", "undecodable", "one-frame"],
)
def test_bad_input(tmp_path: Path, make, match: str) -> None:
    src = make(tmp_path)
    dst = tmp_path / "out.mp4"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VideoWarning)
        with pytest.raises(InputError, match=match) as info:
            run(src, dst)
    assert "\n" not in str(info.value)
    assert not dst.exists() and leftovers(tmp_path) == []


def test_truncated_input_still_works_with_warning(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=20)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size * 6 // 10])
    with pytest.warns(VideoWarning, match="truncated"):
        report = run(cut, tmp_path / "out.mp4")
    assert 2 <= report.input_frames < 20
    assert report.output_frames == 2 * report.input_frames


def test_corrupt_packets_counted_in_report(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=20, audio=False)
    data = bytearray(src.read_bytes())
    start, end = data.find(b"mdat"), data.find(b"moov")
    lo, hi = start + (end - start) * 4 // 10, start + (end - start) * 6 // 10
    data[lo:hi] = np.random.default_rng(0).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.warns(VideoWarning, match="corrupt"):
        report = run(bad, tmp_path / "out.mp4")
    assert report.skipped_packets > 0
    assert report.output_frames == 2 * report.input_frames


def test_refuses_output_equal_to_input(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    before = digest(src)
    (tmp_path / "sub").mkdir()
    for same in (src, tmp_path / "sub" / ".." / "in.mp4"):
        with pytest.raises(OutputError, match="is the input"):
            run(src, same, overwrite=True)
    assert digest(src) == before and leftovers(tmp_path) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        run(src, dst)
    assert dst.read_bytes() == b"keep me"
    run(src, dst, overwrite=True)
    assert probe(dst).frames == 8


def test_missing_output_folder(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    with pytest.raises(OutputError, match="folder does not exist"):
        run(src, tmp_path / "nope" / "out.mp4")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            run(src, locked / "out.mp4")
    finally:
        locked.chmod(0o700)


def test_lossless_needs_mkv_and_leaves_nothing(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    with pytest.raises(OutputError, match="mkv"):
        run(src, tmp_path / "out.mp4", lossless=True)
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("model exploded"), KeyboardInterrupt()])
def test_failure_midway_leaves_no_file(tmp_path: Path, error: BaseException) -> None:
    src = make_video(tmp_path / "in.mp4", frames=10)
    dst = tmp_path / "out.mp4"
    calls = 0
    seen_partial = []

    def mid(a, b):
        nonlocal calls
        calls += 1
        seen_partial.extend(leftovers(tmp_path))
        if calls == 4:
            raise error
        return blend(a, b)

    with pytest.raises(type(error)):
        run(src, dst, midpoint=mid)
    assert seen_partial and seen_partial[0].startswith(".out.partial-") and seen_partial[0].endswith(".mp4")
    assert not dst.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("stage", ["decode", "encode"])
def test_failure_in_a_background_stage_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    src = make_video(tmp_path / "in.mp4", frames=12)
    dst = tmp_path / "out.mp4"
    if stage == "decode":
        original = FrameReader.__iter__

        def failing_iter(self):
            for index, frame in enumerate(original(self)):
                if index == 6:
                    raise InputError("decoder failed")
                yield frame

        monkeypatch.setattr(FrameReader, "__iter__", failing_iter)
    else:
        from sepconv_cli.video import VideoWriter

        original_write = VideoWriter.write
        calls = 0

        def failing_write(self, *args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == 7:
                raise OSError("No space left on device")
            return original_write(self, *args, **kwargs)

        monkeypatch.setattr(VideoWriter, "write", failing_write)
    with pytest.raises((InputError, OSError), match="decoder failed|No space left"):
        run(src, dst, midpoint=blend)
    assert not dst.exists() and leftovers(tmp_path) == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("sepconv-")]


def test_failure_keeps_existing_output_untouched(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=6, audio=False)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"previous result")

    def mid(a, b):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run(src, dst, midpoint=mid, overwrite=True)
    assert dst.read_bytes() == b"previous result" and leftovers(tmp_path) == []


def test_audio_reencoded_only_when_container_cannot_hold_it(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=10, audio_codec="pcm_u8")
    copied = run(src, tmp_path / "out.mkv")
    assert (copied.audio_copied, copied.audio_reencoded) == (1, 0)
    with pytest.warns(VideoWarning, match="re-encoding"):
        report = run(src, tmp_path / "out.mp4")
    assert (report.audio_copied, report.audio_reencoded) == (0, 1)
    assert stream_seconds(tmp_path / "out.mp4", "audio") == pytest.approx(0.4, abs=0.05)


def test_report_summary_says_what_was_done() -> None:
    report = pipeline.InterpolationReport(
        input_path=Path("in.mp4"), output_path=Path("/x/out.mp4"), factor=2, input_frames=12, output_frames=24,
        input_rate=Fraction(30000, 1001), output_rate=Fraction(60000, 1001), input_duration=0.4, output_duration=0.4,
        cuts=1, skipped_packets=2, seconds=1.31, duplicates=3,
    )
    assert report.summary() == (
        "out.mp4: 12 → 24 frames, 30000/1001 (≈29.970) → 60000/1001 (≈59.940) fps, 0.400 s, "
        "3 duplicate frames found, 1 cut not blended, 2 corrupt packet(s) skipped, in 1.3 s"
    )
    plain = replace(report, input_rate=Fraction(25), output_rate=Fraction(50), cuts=0, skipped_packets=0,
                    duplicates=1)
    assert plain.summary() == "out.mp4: 12 → 24 frames, 25 → 50 fps, 0.400 s, 1 duplicate frame found, in 1.3 s"
    assert "duplicate" not in replace(plain, duplicates=None).summary()  # dedup off says nothing


def test_the_last_frame_is_repeated_f_minus_1_times_as_the_note_says(tmp_path: Path) -> None:
    """FRAME_COUNT_NOTE: the last frame has no successor, so it is repeated F−1 times."""
    assert "repeated F−1 times" in pipeline.FRAME_COUNT_NOTE
    src = make_video(tmp_path / "in.mkv", frames=4, audio=False, codec="ffv1", pix_fmt="yuv444p")
    run(src, tmp_path / "out.mkv", factor=4, lossless=True)
    got = [f.rgb for f in iter_frames(tmp_path / "out.mkv")]
    last = [f.rgb for f in iter_frames(src)][-1]
    assert len(got) == 16
    assert all(np.array_equal(frame, last) for frame in got[12:])
    assert not np.array_equal(got[11], last)  # the frame before is a blend, not a copy


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no NVIDIA GPU exists")
def test_hardware_encoder_without_its_device_is_a_clear_error(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=4, audio=False)
    with pytest.raises(OutputError, match="hardware encoder h264_nvenc .* needs the matching GPU"):
        run(src, tmp_path / "out.mp4", midpoint=blend, codec="h264_nvenc")
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.mp4").exists()
