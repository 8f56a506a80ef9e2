"""Real codec artefacts for training inputs: a round trip through libx264 with PyAV.

Footage people interpolate has been through a video codec: blocking, ringing, smeared
chroma (4:2:0) and texture that flickers from frame to frame. A synthetic scene gets the
same by encoding its input frames as a short H.264 clip at a random CRF and decoding it,
so the flow and the network see at training time what they see at run time.
"""

from __future__ import annotations

import io

import av
import numpy as np


def h264_roundtrip(frames: np.ndarray, crf: int, preset: str = "veryfast") -> np.ndarray:
    """``frames`` (T, 3, H, W) uint8 RGB, H and W even, encoded as one H.264 clip and decoded.

    Returns the decoded frames, same shape and dtype. The first frame is an I-frame and
    the others are predicted from it, as in a real stream.
    """
    count, channels, height, width = frames.shape
    if channels != 3 or height % 2 or width % 2:
        raise ValueError(f"expected (T, 3, H, W) RGB frames with even sides, got {frames.shape}")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(int(crf)), "preset": preset, "tune": "film"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image.transpose(1, 2, 0)), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, "r") as container:
        decoded = [frame.to_ndarray(format="rgb24").transpose(2, 0, 1) for frame in container.decode(video=0)]
    if len(decoded) != count:
        raise RuntimeError(f"libx264 round trip returned {len(decoded)} of {count} frames")
    return np.stack(decoded)
