"""Frames that are not plain progressive, opaque pictures: interlaced fields and alpha.

The reader turns every frame into opaque progressive RGB. An interlaced frame holds two
half-pictures (fields) 1/50 or 1/60 s apart; interpolated as one picture, every moving
edge combs, so such input is either put through FFmpeg's bwdif deinterlacer first
(``deinterlaced``) or reported. An alpha plane is dropped, and reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import av
import av.error

if TYPE_CHECKING:
    from sepconv_cli.video_types import VideoInfo

__all__ = ["deinterlaced", "field_order", "has_alpha", "input_warnings"]


# AVFieldOrder values: 1 progressive, then which field is coded and shown first.
_FIELD_ORDERS = {2: "tt", 3: "bb", 4: "tb", 5: "bt"}


def field_order(ctx: Any, interlaced_frame: bool) -> str:
    """The stream's field order as FFmpeg names it, "interlaced" when only the first frame
    says it is, else "progressive"."""
    try:
        order = int(ctx.field_order or 0)
    except (TypeError, ValueError):
        order = 0
    if order in _FIELD_ORDERS:
        return _FIELD_ORDERS[order]
    return "interlaced" if interlaced_frame and order != 1 else "progressive"


def has_alpha(pix_fmt: str | None) -> bool:
    """Whether a pixel format carries an alpha plane (yuva420p, rgba, ya8, gbrap…)."""
    if not pix_fmt:
        return False
    try:
        return len(av.VideoFormat(pix_fmt).components) in (2, 4)
    except (ValueError, av.error.FFmpegError):
        return False


def input_warnings(info: VideoInfo, deinterlace: bool = False) -> list[str]:
    """One-line notes on what reading ``info``'s video as progressive, opaque RGB loses."""
    notes = []
    if info.interlaced and not deinterlace:
        order = f" ({info.field_order})" if info.field_order != "interlaced" else ""
        notes.append(
            f"{info.path.name} is interlaced{order}: interpolated as progressive frames its moving edges comb; "
            "use --deinterlace (bwdif), or deinterlace it first (ffmpeg -i in -vf bwdif out)"
        )
    if info.alpha:
        notes.append(f"{info.path.name} has an alpha channel ({info.pix_fmt}): it is dropped, the output is opaque")
    return notes


def deinterlaced(frames: Iterator[av.VideoFrame], stream: Any) -> Iterator[av.VideoFrame]:
    """``frames`` through FFmpeg's bwdif filter (one progressive frame per interlaced
    frame, at its timestamp; progressive frames in a mixed stream pass unchanged)."""
    graph = av.filter.Graph()
    source = graph.add_buffer(template=stream)
    bwdif = graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
    sink = graph.add("buffersink")
    source.link_to(bwdif)
    bwdif.link_to(sink)
    graph.configure()

    def drain() -> Iterator[av.VideoFrame]:
        while True:
            try:
                yield graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    for frame in frames:
        graph.push(frame)
        yield from drain()
    graph.push(None)
    yield from drain()
