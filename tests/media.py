"""Tiny synthetic test videos, rendered with PyAV in a few milliseconds each.

``make_video`` draws a deterministic textured pan (a smooth periodic pattern moving
two pixels right and one down per frame), optionally with a hard cut to a texture in
different colours, a sine-wave audio track, irregular (VFR) timestamps, colour tags,
a display-matrix rotation and a subtitle track. Other test files import it:

    from tests.media import make_video
    src = make_video(tmp_path / "in.mp4", frames=12, audio=True)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Per-frame offsets of the irregular (VFR) timing, in milliseconds; cycled.
VFR_STEPS_MS = (40, 40, 80, 40, 120, 20, 60)
AUDIO_RATE = 48000


def texture(index: int, width: int, height: int, scene: int = 0, deep: bool = False) -> np.ndarray:
    """Frame ``index`` of the pan as an ``(H, W, 3)`` RGB array (uint8, or uint16 if ``deep``).

    Scene 0 is warm (red/yellow), scene 1 cool (blue/green), so that a switch between
    them is a shot cut for ``scenes.is_cut`` while the pan within one scene is not.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x = x - 2.0 * index
    y = y - 1.0 * index
    a = 0.5 + 0.25 * np.sin(x * 2 * np.pi / 23) + 0.25 * np.cos(y * 2 * np.pi / 17)
    b = 0.5 + 0.5 * np.sin((x + y) * 2 * np.pi / 31)
    if scene == 0:
        rgb = np.stack([0.6 + 0.35 * a, 0.2 + 0.4 * b, 0.05 + 0.15 * a * b], axis=-1)
    else:
        rgb = np.stack([0.05 + 0.15 * a * b, 0.35 + 0.3 * b, 0.6 + 0.35 * a], axis=-1)
    top = 65535 if deep else 255
    return np.clip(np.rint(rgb * top), 0, top).astype(np.uint16 if deep else np.uint8)


def frame_pts_ms(frames: int, rate: Fraction, vfr: bool) -> list[int] | None:
    """Presentation times in ms for VFR videos (None for constant rate)."""
    if not vfr:
        return None
    out, t = [], 0
    for i in range(frames):
        out.append(t)
        t += VFR_STEPS_MS[i % len(VFR_STEPS_MS)]
    return out


def _bit_depth(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def make_video(
    path: str | Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 12,
    rate: Fraction | int = Fraction(25),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = True,
    vfr: bool = False,
    cut_at: int | None = None,
    rotation: int | None = None,
    colour: dict[str, int] | None = None,
    audio_codec: str | None = None,
    subtitles: bool = False,
    options: dict[str, str] | None = None,
    video_start: Fraction | int = 0,
    audio_start: Fraction | int = 0,
) -> Path:
    """Render a small synthetic video to ``path`` and return it.

    - ``rate``: nominal frame rate (exact rational); with ``vfr=True`` frames instead
      follow the irregular ``VFR_STEPS_MS`` cycle in a 1/1000 s time base.
    - ``cut_at``: index of the first frame of a second, differently coloured shot.
    - ``audio``: a 440 Hz sine as long as the video, AAC in MP4/MOV, FLAC elsewhere
      (``audio_codec`` overrides, e.g. ``"pcm_u8"`` which MP4 cannot hold).
    - ``colour``: codec-context colour tags, e.g. ``{"color_range": 2, "colorspace": 1,
      "color_primaries": 1, "color_trc": 1}``; the pixels are converted with that
      matrix and range so a correct reader gets the rendered RGB back.
    - ``rotation``: display-matrix rotation in degrees (counter-clockwise).
    - ``subtitles``: one SubRip cue (Matroska only).
    - ``video_start`` / ``audio_start``: seconds at which the first video frame / audio
      sample is presented (a clip cut from a longer recording rarely starts at 0, nor do
      its streams together); ``video_start`` must be a whole number of time-base units.
    """
    path = Path(path)
    rate = Fraction(rate)
    deep = _bit_depth(pix_fmt) > 8
    colour = dict(colour or {})
    pts_ms = frame_pts_ms(frames, rate, vfr)
    if pts_ms is not None:
        time_base = Fraction(1, 1000)
        duration_s = Fraction(pts_ms[-1] + VFR_STEPS_MS[(frames - 1) % len(VFR_STEPS_MS)], 1000)
    else:
        time_base = 1 / rate
        duration_s = frames / rate
    mp4like = path.suffix.lower() in (".mp4", ".mov", ".m4v")

    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=rate, options=dict(options or {}))
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.codec_context.time_base = time_base
        vs.time_base = time_base
        if codec == "libx264":
            vs.options = {"preset": "ultrafast", "crf": "10", **(options or {})}
        for key, value in colour.items():
            setattr(vs.codec_context, key, value)
        if rotation:
            vs.set_display_rotation(rotation)
        aud = None
        if audio:
            name = audio_codec or ("aac" if mp4like else "flac")
            aud = out.add_stream(name, rate=AUDIO_RATE)
            aud.layout = "mono"
        sub = None
        if subtitles:
            sub = out.add_mux_stream("subrip", time_base=Fraction(1, 1000))

        # Convert RGB to YUV with the tagged matrix/range (default BT.601 limited).
        space = {1: "ITU709", 9: "BT2020", 10: "BT2020", 7: "SMPTE240M"}.get(
            colour.get("colorspace", 2), "ITU601"
        )
        rng = "JPEG" if colour.get("color_range") == 2 else "MPEG"

        video_offset = Fraction(video_start) / time_base
        if video_offset.denominator != 1:
            raise ValueError(f"video_start {video_start} is not a multiple of the time base {time_base}")
        audio_offset = round(Fraction(audio_start) * AUDIO_RATE)
        next_audio = 0
        total_samples = int(duration_s * AUDIO_RATE)
        for i in range(frames):
            scene = 1 if cut_at is not None and i >= cut_at else 0
            rgb = texture(i, width, height, scene, deep)
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
            vf = vf.reformat(format=pix_fmt, dst_colorspace=space, dst_color_range=rng)
            for key, value in colour.items():
                setattr(vf, key, value)
            vf.pts = int(video_offset) + (pts_ms[i] if pts_ms is not None else i)
            vf.time_base = time_base
            out.mux(vs.encode(vf))
            # Keep audio roughly interleaved with the video as a real file would be.
            t_next = (
                Fraction(pts_ms[i + 1], 1000) if pts_ms is not None and i + 1 < frames
                else Fraction(i + 1) / rate if i + 1 < frames else duration_s
            )
            while aud is not None and next_audio < min(total_samples, int(t_next * AUDIO_RATE)):
                n = min(1024, total_samples - next_audio)
                t = (np.arange(next_audio, next_audio + n) / AUDIO_RATE).astype(np.float64)
                samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
                fmt = aud.codec_context.format.name if aud.codec_context.format else "fltp"
                af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                af.sample_rate = AUDIO_RATE
                af.pts = audio_offset + next_audio
                af.time_base = Fraction(1, AUDIO_RATE)
                if fmt != "fltp":
                    af = av.AudioResampler(format=fmt, layout="mono", rate=AUDIO_RATE).resample(af)
                    for f in af:
                        out.mux(aud.encode(f))
                else:
                    out.mux(aud.encode(af))
                next_audio += n
        out.mux(vs.encode(None))
        if aud is not None:
            out.mux(aud.encode(None))
        if sub is not None:
            packet = av.Packet(b"Hello from the subtitle track")
            packet.stream = sub
            packet.time_base = Fraction(1, 1000)
            packet.pts = packet.dts = 0
            packet.duration = int(duration_s * 1000) // 2
            out.mux(packet)
    return path


def make_audio_only(path: str | Path, seconds: float = 0.5) -> Path:
    """An audio-only file (AAC in MP4 / FLAC elsewhere) with no video stream."""
    path = Path(path)
    mp4like = path.suffix.lower() in (".mp4", ".m4a", ".mov")
    with av.open(str(path), "w") as out:
        aud = out.add_stream("aac" if mp4like else "flac", rate=AUDIO_RATE)
        aud.layout = "mono"
        n = int(seconds * AUDIO_RATE)
        for start in range(0, n, 1024):
            t = np.arange(start, min(n, start + 1024)) / AUDIO_RATE
            af = av.AudioFrame.from_ndarray(
                (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :], format="fltp", layout="mono"
            )
            af.sample_rate = AUDIO_RATE
            af.pts = start
            out.mux(aud.encode(af))
        out.mux(aud.encode(None))
    return path


def decode_rgb(path: str | Path) -> list[np.ndarray]:
    """Every frame of ``path`` as RGB (uint8, or uint16 rgb48 for >8-bit), via PyAV only."""
    frames = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            deep = max(comp.bits for comp in f.format.components) > 8
            frames.append(f.to_ndarray(format="rgb48le" if deep else "rgb24"))
    return frames
