"""Reading still images (frames of image sequences, photographs) as RGB arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def read_image(path: str | Path) -> np.ndarray | None:
    """An image file as ``(H, W, 3)`` uint8 RGB, or ``None`` if missing or unreadable.

    Decoded from bytes rather than with ``cv2.imread``, which cannot open non-ASCII
    paths on every platform and says nothing about why it failed.
    """
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        return None
    return np.ascontiguousarray(bgr[:, :, ::-1])
