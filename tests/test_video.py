"""Reader and writer (``sepconv_cli.video``) on tiny synthetic videos."""

from __future__ import annotations

import random
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sepconv_cli.errors import InputError, OutputError
from sepconv_cli.video import (
    FrameReader,
    VideoWarning,
    VideoWriter,
    choose_pix_fmt,
    iter_frames,
    probe,
)
from tests.media import decode_rgb, make_audio_only, make_video, texture


def _streams(path: Path) -> dict[str, list]:
    with av.open(str(path)) as c:
        return {
            "video": [s.codec_context.name for s in c.streams.video],
            "audio": [s.codec_context.name for s in c.streams.audio],
            "subtitle": [s.codec_context.name for s in c.streams.subtitles],
        }


# -- probe -------------------------------------------------------------------------


def test_probe_basic(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=12, rate=Fraction(30000, 1001))
    info = probe(src)
    assert (info.width, info.height) == (64, 48)
    assert info.frame_rate == Fraction(30000, 1001)
    assert isinstance(info.time_base, Fraction)
    assert info.frames == 12
    assert info.duration == pytest.approx(12 * 1001 / 30000, abs=0.03)
    assert (info.pix_fmt, info.bit_depth, info.codec) == ("yuv420p", 8, "h264")
    assert (info.audio_streams, info.subtitle_streams, info.rotation) == (1, 0, 0)


def test_probe_tags_rotation_depth_subtitles(tmp_path: Path) -> None:
    colour = {"color_range": 2, "colorspace": 1, "color_primaries": 1, "color_trc": 1}
    src = make_video(
        tmp_path / "in.mkv", pix_fmt="yuv420p10le", colour=colour, rotation=90, subtitles=True
    )
    info = probe(src)
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p10le", 10)
    assert (info.color_range, info.colorspace, info.color_primaries, info.color_trc) == (2, 1, 1, 1)
    assert info.rotation == 90
    assert (info.audio_streams, info.subtitle_streams) == (1, 1)
    assert info.full_range and info.matrix == "ITU709"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.mp4", "not found"),
        (lambda d: (d / "notes.mp4").write_text("not a video\n" * 20) and d / "notes.mp4", "not a video"),
        (lambda d: make_audio_only(d / "sound.m4a"), "no video stream"),
        (lambda d: d, "folder"),
    ],
)
def test_probe_bad_input(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(InputError, match=match):
        probe(make(tmp_path))


# -- reading -----------------------------------------------------------------------


def test_iter_frames_8bit(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=10, audio=False)
    frames = list(iter_frames(src))
    assert [f.index for f in frames] == list(range(10))
    assert [f.pts for f in frames] == [Fraction(i, 25) for i in range(10)]
    assert all(f.rgb.dtype == np.uint8 and f.rgb.shape == (48, 64, 3) for f in frames)
    # Close to what was rendered (lossy H.264 + 4:2:0 chroma).
    err = np.abs(frames[3].rgb.astype(int) - texture(3, 64, 48).astype(int)).mean()
    assert err < 6


def test_iter_frames_10bit_full_precision(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=4, pix_fmt="yuv420p10le", audio=False)
    frames = list(iter_frames(src))
    rgb = frames[1].rgb
    assert rgb.dtype == np.uint16 and rgb.shape == (48, 64, 3)
    # Full 16-bit scale, not 8-bit values shifted up.
    assert rgb.max() > 255 * 200 and np.any(rgb % 257 != 0)
    err = np.abs(rgb.astype(float) - texture(1, 64, 48, deep=True)).mean() / 257
    assert err < 6


@pytest.mark.parametrize(
    "colour",
    [
        {},  # untagged: BT.601 limited for SD
        {"color_range": 2, "colorspace": 1, "color_primaries": 1, "color_trc": 1},  # BT.709 full
        {"color_range": 1, "colorspace": 9, "color_primaries": 9, "color_trc": 14},  # BT.2020 limited
    ],
)
def test_reader_honours_matrix_and_range(tmp_path: Path, colour: dict) -> None:
    src = make_video(tmp_path / "in.mkv", frames=3, codec="ffv1", pix_fmt="yuv444p", colour=colour, audio=False)
    got = next(iter(iter_frames(src))).rgb.astype(int)
    # FFV1 4:4:4 is lossless, so only the YUV rounding is left: a wrong matrix or range
    # would be off by far more than this.
    assert np.abs(got - texture(0, 64, 48).astype(int)).max() <= 3


def test_corrupt_packets_are_skipped_with_warning(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=20, audio=False)
    data = bytearray(src.read_bytes())
    rng = random.Random(0)
    start, end = data.find(b"mdat"), data.find(b"moov")
    for i in range(start + (end - start) * 4 // 10, start + (end - start) * 6 // 10):
        data[i] = rng.randrange(256)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.warns(VideoWarning, match="corrupt"):
        reader = FrameReader(bad)
        frames = list(reader)
    assert 2 <= len(frames) < 20
    assert reader.skipped_packets > 0
    assert all(a.pts < b.pts for a, b in zip(frames, frames[1:]))


def test_truncated_file_warns(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=20)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size * 6 // 10])
    with pytest.warns(VideoWarning, match="truncated"):
        frames = list(iter_frames(cut))
    assert 2 <= len(frames) < 20


def test_nothing_decodable_is_an_input_error(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=12, audio=False)
    data = bytearray(src.read_bytes())
    rng = random.Random(1)
    for i in range(data.find(b"mdat") + 4, data.find(b"moov") - 4):
        data[i] = rng.randrange(256)
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VideoWarning)
        with pytest.raises(InputError, match="no decodable video frames"):
            list(iter_frames(bad))


# -- pixel formats -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "src", "depth", "size", "expected"),
    [
        ("libx264", "yuv420p", 8, (64, 48), "yuv420p"),
        ("libx264", "yuv420p10le", 10, (64, 48), "yuv420p10le"),
        ("libx265", "yuv420p10le", 10, (64, 48), "yuv420p10le"),
        ("ffv1", "yuv420p10le", 10, (64, 48), "yuv420p10le"),
        ("libx264", "yuvj420p", 8, (64, 48), "yuv420p"),
        ("libx264", "yuv420p12le", 12, (64, 48), "yuv420p10le"),  # nearest x264 has
        ("libx264", "yuv420p", 8, (175, 143), "yuv444p"),  # odd: no 4:2:0
        ("libx264", "yuv420p10le", 10, (175, 143), "yuv444p10le"),
        ("ffv1", "yuv420p", 8, (175, 143), "yuv420p"),  # FFV1 subsamples odd sizes
    ],
)
def test_choose_pix_fmt(codec, src, depth, size, expected) -> None:
    assert choose_pix_fmt(codec, src, depth, *size) == expected


# -- writing -------------------------------------------------------------------------


def _write_all(src: Path, dst: Path, **kwargs) -> None:
    info = probe(src)
    with VideoWriter(dst, info, **kwargs) as writer:
        for frame in iter_frames(src):
            writer.write(frame.rgb, frame.timestamp, frame.duration)


def test_writer_rgb_roundtrip_and_audio_copy(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=10)
    dst = tmp_path / "out.mp4"
    _write_all(src, dst, preset="ultrafast")
    assert _streams(dst) == {"video": ["h264"], "audio": ["aac"], "subtitle": []}
    got, want = decode_rgb(dst), decode_rgb(src)
    assert len(got) == 10
    assert np.abs(got[5].astype(int) - want[5].astype(int)).mean() < 3
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        pa = [(p.pts, bytes(p)) for p in a.demux(audio=0) if p.size]
        pb = [(p.pts, bytes(p)) for p in b.demux(audio=0) if p.size]
    assert pa == pb  # copied packet for packet, not re-encoded


def test_writer_10bit(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=4, pix_fmt="yuv420p10le", audio=False)
    dst = tmp_path / "out.mkv"
    _write_all(src, dst, preset="ultrafast")
    assert probe(dst).pix_fmt == "yuv420p10le"
    got = decode_rgb(dst)[2]
    assert got.dtype == np.uint16
    assert np.abs(got.astype(float) - decode_rgb(src)[2]).mean() / 257 < 3


def test_writer_lossless_passthrough_is_exact(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=5, audio=False)
    dst = tmp_path / "out.mkv"
    info = probe(src)
    with VideoWriter(dst, info, lossless=True) as writer:
        for frame in iter_frames(src):
            writer.write(frame.source, frame.timestamp, frame.duration)
    assert probe(dst).codec == "ffv1" and probe(dst).pix_fmt == "yuv420p"
    for a, b in zip(decode_rgb(src), decode_rgb(dst), strict=True):
        assert np.array_equal(a, b)


def test_writer_lossless_needs_mkv(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    with pytest.raises(OutputError, match="mkv"):
        VideoWriter(tmp_path / "out.mp4", probe(src), lossless=True)
    assert not (tmp_path / "out.mp4").exists()


def test_writer_reencodes_audio_the_container_cannot_hold(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=10, audio_codec="pcm_u8")
    dst = tmp_path / "out.mp4"
    with pytest.warns(VideoWarning, match="re-encoding"):
        _write_all(src, dst, preset="ultrafast")
    assert _streams(dst)["audio"] == ["aac"]
    with av.open(str(dst)) as c:
        a = c.streams.audio[0]
        assert float(a.duration * a.time_base) == pytest.approx(0.4, abs=0.05)


def test_writer_subtitles_copied_or_dropped(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=6, subtitles=True)
    _write_all(src, tmp_path / "out.mkv", preset="ultrafast")
    assert _streams(tmp_path / "out.mkv")["subtitle"] == _streams(src)["subtitle"] != []
    with pytest.warns(VideoWarning, match="subtitle"):
        _write_all(src, tmp_path / "out.mp4", preset="ultrafast")
    assert _streams(tmp_path / "out.mp4") == {"video": ["h264"], "audio": ["flac"], "subtitle": []}


def test_writer_odd_size_works(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", width=175, height=143, frames=3, codec="ffv1", audio=False)
    with pytest.warns(VideoWarning, match="odd"):
        _write_all(src, tmp_path / "out.mp4", preset="ultrafast")
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.pix_fmt) == (175, 143, "yuv444p")


def test_writer_rejects_wrong_shape(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    with VideoWriter(tmp_path / "out.mp4", probe(src)) as writer:
        with pytest.raises(ValueError, match="expected"):
            writer.write(np.zeros((10, 10, 3), np.uint8), 0)
        writer.write(np.zeros((48, 64, 3), np.uint8), 0)


def test_writer_reencodes_when_muxer_refuses_at_header(tmp_path: Path) -> None:
    # FFmpeg's tables say MOV holds FLAC, but the MOV muxer refuses it when writing
    # the header: the writer must notice up front and re-encode instead of failing.
    src = make_video(tmp_path / "in.mkv", frames=6)
    with pytest.warns(VideoWarning, match="re-encoding"):
        _write_all(src, tmp_path / "out.mov", preset="ultrafast")
    assert _streams(tmp_path / "out.mov")["audio"] == ["aac"]


class _Labelled:
    def __init__(self, pts: int | None, name: str) -> None:
        self.pts, self.name = pts, name


def test_decode_order_timestamps_are_put_back_in_presentation_order() -> None:
    from sepconv_cli.video import _in_presentation_order

    # AVI with B-frames: the decoder emits frames in display order (a, b, c, ...) but
    # labels them with decode-order timestamps.
    labels = [1, 2, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12]
    frames = [_Labelled(p, chr(ord("a") + i)) for i, p in enumerate(labels)]
    out = list(_in_presentation_order(iter(frames), depth=4))
    assert [f.name for f, _ in out] == [f.name for f in frames]
    assert [ts for _, ts in out] == sorted(labels)
    # Correct labels, gaps (VFR) and missing timestamps pass through unchanged.
    vfr = [_Labelled(p, str(p)) for p in (0, 3, 4, 9, None, 20, 21)]
    assert [ts for _, ts in _in_presentation_order(iter(vfr), depth=4)] == [0, 3, 4, 9, None, 20, 21]


MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")


@pytest.mark.skipif(not MEGAMIND.is_file(), reason="needs Debian's opencv-doc sample clip")
def test_avi_with_b_frames_keeps_every_frame() -> None:
    frames = list(iter_frames(MEGAMIND))
    assert len(frames) == 270
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))
