"""Which VP9 crf and MPEG-2 quantiser give the quality of libx264 at a given --crf.

    python benchmarks/crf_equivalence.py            # prints the tables and the fitted lines

``--crf`` is on x264's scale; the writer translates it for libvpx-vp9 (WebM) and
mpeg2video (.mpg) with ``video.vp9_crf`` and ``video.mpeg_qscale``, whose two numbers each
are fitted here. The test footage is natural photographs from scikit-image (astronaut,
coffee, rocket) panned and slowly zoomed with sub-pixel motion, 256x192, 25 fps, encoded
with each encoder as the writer configures it (``video.quality_options``, preset medium);
quality is the mean PSNR over all frames in RGB. For every x264 crf the equivalent setting
is the one, interpolated linearly, with the same PSNR; a line through those (through
log2 of MPEG-2's quantiser) is what the writer uses. Results are written in docs/encoders.md.
"""

from __future__ import annotations

import io
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sepconv_cli.video import quality_options  # noqa: E402

WIDTH, HEIGHT, FRAMES, RATE = 256, 192, 30, 25
X264_CRFS = (14, 18, 23, 28, 33)
VP9_CRFS = (8, 14, 20, 26, 32, 38, 44, 50, 56)
MPEG_QS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20)


def clip(image: np.ndarray) -> list[np.ndarray]:
    """FRAMES views of ``image`` moving 1.7 px right, 0.6 px down and zooming 0.4 % per frame."""
    h, w = image.shape[:2]
    frames = []
    for i in range(FRAMES):
        # Output pixel (x, y) shows the image at (scale·x + left, scale·y + top).
        scale = 1.0 + 0.004 * i
        left, top = (w - 340) / 2 + 1.7 * i, (h - 240) / 2 + 0.6 * i
        matrix = np.array([[scale, 0, left], [0, scale, top]])
        frames.append(cv2.warpAffine(image, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP))
    return frames


def encode(frames: list[np.ndarray], codec: str, options: dict[str, str], container: str) -> tuple[bytes, int]:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = Fraction(1, RATE)
        stream.options = options
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU601")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buf.getvalue()
    return data, len(data)


def psnr(data: bytes, frames: list[np.ndarray]) -> float:
    with av.open(io.BytesIO(data)) as container:
        decoded = [f.to_ndarray(format="rgb24", src_colorspace="ITU601") for f in container.decode(video=0)]
    assert len(decoded) == len(frames), (len(decoded), len(frames))
    errors = [np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) for a, b in zip(decoded, frames)]
    return float(10 * np.log10(255.0**2 / max(np.mean(errors), 1e-10)))


def equivalent(target: float, settings: tuple[int, ...], scores: list[float]) -> float:
    """The setting (interpolated) whose PSNR is ``target``; scores fall as settings rise."""
    for (s0, p0), (s1, p1) in zip(zip(settings, scores), zip(settings[1:], scores[1:])):
        if p0 >= target >= p1:
            return s0 + (s1 - s0) * (p0 - target) / (p0 - p1)
    return float(settings[0] if target > scores[0] else settings[-1])


def main() -> None:
    import skimage.data

    images = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()]
    clips = [clip(image) for image in images]

    def score(codec: str, options: dict[str, str], container: str) -> tuple[float, float]:
        results = [encode(frames, codec, options, container) for frames in clips]
        quality = float(np.mean([psnr(data, frames) for (data, _), frames in zip(results, clips)]))
        kbps = float(np.mean([size for _, size in results])) * 8 / (FRAMES / RATE) / 1000
        return quality, kbps

    x264 = {crf: score("libx264", quality_options("libx264", crf, "medium"), "mp4") for crf in X264_CRFS}
    vp9_opts = quality_options("libvpx-vp9", 0, "medium")
    vp9 = {c: score("libvpx-vp9", {**vp9_opts, "crf": str(c)}, "webm") for c in VP9_CRFS}
    mpeg = {q: score("mpeg2video", {"qmin": str(q), "qmax": str(q)}, "mpeg") for q in MPEG_QS}

    print("encoder     setting  PSNR dB  kbit/s")
    for name, table in (("libx264", x264), ("libvpx-vp9", vp9), ("mpeg2video", mpeg)):
        for setting, (quality, kbps) in table.items():
            print(f"{name:<11} {setting:>7}  {quality:7.2f}  {kbps:6.0f}")
    print()
    print("x264 crf  PSNR dB  VP9 crf  MPEG-2 q")
    pairs_vp9, pairs_q = [], []
    for crf, (quality, _) in x264.items():
        v = equivalent(quality, VP9_CRFS, [vp9[c][0] for c in VP9_CRFS])
        q = equivalent(quality, MPEG_QS, [mpeg[c][0] for c in MPEG_QS])
        pairs_vp9.append((crf, v))
        pairs_q.append((crf, q))
        print(f"{crf:>8}  {quality:7.2f}  {v:7.1f}  {q:8.1f}")
    slope, intercept = np.polyfit([c for c, _ in pairs_vp9], [v for _, v in pairs_vp9], 1)
    print(f"VP9 crf ≈ {intercept:.2f} + {slope:.3f} × x264 crf")
    # x264's crf is a logarithm of the quantiser step: fit log2(q) instead.
    slope, intercept = np.polyfit([c for c, _ in pairs_q], [np.log2(v) for _, v in pairs_q], 1)
    print(f"MPEG-2 q ≈ 2 ** ((x264 crf - {-intercept / slope:.1f}) / {1 / slope:.1f})")


if __name__ == "__main__":
    main()
