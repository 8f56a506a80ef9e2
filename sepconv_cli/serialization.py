"""Opening files written with ``torch.save`` without running any code from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepconv_cli.errors import SepconvError


def load_code_free(
    path: str | Path, *, what: str, error: type[SepconvError], map_location: Any = "cpu"
) -> Any:  # noqa: ANN401 - whatever plain containers the file holds
    """``torch.load(path, weights_only=True)``, with one-line ``error``s naming ``what``.

    ``weights_only`` admits only tensors and plain containers, so a file from an untrusted
    source cannot execute code; anything else in it is refused as unreadable.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises anything on garbage
        kind = identify(path)
        if kind is not None:
            raise error(f"{path} is {kind}, not a {what}") from None
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise error(f"{path} is not a readable {what} ({reason})") from None


# Leading bytes of the files most often passed by mistake (a video for --weights, a
# download that failed), checked in order: (offset, bytes, what it is).
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "an MP4/QuickTime video"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (0, b"YUV4MPEG2", "a y4m video"),
    (0, b"\x00\x00\x01\xba", "an MPEG program stream video"),
    (0, b"FLV", "an FLV video"),
    (0, b"OggS", "an Ogg media file"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"\x1f\x8b", "a gzip archive"),
    (0, b"version https://git-lfs", "a Git LFS pointer, not the file itself (run 'git lfs pull')"),
)
_RIFF = {b"AVI ": "an AVI video", b"WAVE": "a WAV audio file", b"WEBP": "a WebP image"}


def identify(path: str | Path) -> str | None:
    """What ``path`` is when it is a common non-PyTorch file ("an MP4/QuickTime video", "an
    HTML page ..."), from its first bytes; None when it is none of those (or unreadable)."""
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError:
        return None
    if not head:
        return "an empty file"
    for offset, signature, kind in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[:1] == b"\x47" and len(head) > 188 and head[188:189] == b"\x47":
        return "an MPEG transport stream video"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download?)"
    return None
