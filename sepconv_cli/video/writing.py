"""Encoding frames to a video file or stream (``VideoWriter``), with the input's audio and
subtitles copied alongside, interleaved by timestamp."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from sepconv_cli.errors import OutputError
from sepconv_cli.timespan import Cut
from sepconv_cli.video.description import _SWS_FLAGS, VideoWarning, _is_rgb_fmt, _open_input
from sepconv_cli.video.encoders import (
    _RATE_ONLY,
    _container_codec_ok,
    choose_pix_fmt,
    default_codec,
    quality_options,
)
from sepconv_cli.video.pipes import y4m_pix_fmt
from sepconv_cli.video_types import VideoInfo, is_full_range_fmt


class VideoWriter:
    """Encode RGB frames to ``path``, carrying over ``template``'s streams and tags.

    ``template`` (usually ``probe(input)``) gives the size, pixel format (kept where
    ``codec`` allows it: 10-bit in gives yuv420p10le out with libx264/libx265/ffv1),
    colour tags, rotation and the file whose audio and subtitle streams are copied
    (``copy_streams=True``). Audio is copied without re-encoding; only a codec the
    output container cannot hold is re-encoded (to AAC, or the container's default),
    with a ``VideoWarning``. Subtitles the container cannot hold are dropped with a
    warning, as are data and attachment streams. Copied packets are read from a second
    demuxer of the source as the video advances, so audio is interleaved with video by
    timestamp and never buffered whole.

    ``time_base`` (default: the template's) is the unit of the integer ``pts`` passed to
    ``write``; ``rate`` (default: the template's) is the nominal frame rate given to the
    encoder. ``codec`` ``None`` picks the container's usual encoder (``default_codec``), and
    ``codec_chosen`` then says so; ``crf``/``preset`` are on x264's scale, translated for VP9
    and MPEG-2 (``quality_options``). ``lossless=True`` encodes FFV1 and needs a ``.mkv`` path. ``file`` (a binary
    file object, e.g. stdout) and ``format`` (FFmpeg's muxer name, e.g. ``"nut"``) write a
    stream instead of ``path``, which then only names it in messages. ``cut`` (from a
    ``FrameReader`` given a span) copies only that part of the audio and subtitles, moved
    to start where the video does (``timespan.Cut.place``).

    Use as a context manager: a normal exit flushes the encoder and the remaining
    audio and writes the trailer; an exception closes the file without finishing it
    (the caller deletes it).
    """

    def __init__(
        self,
        path: str | Path,
        template: VideoInfo,
        *,
        rate: Fraction | None = None,
        time_base: Fraction | None = None,
        codec: str | None = None,
        crf: int = 18,
        preset: str = "medium",
        lossless: bool = False,
        codec_options: dict[str, str] | None = None,
        copy_streams: bool = True,
        pix_fmt: str | None = None,
        display_name: str | None = None,
        file: Any = None,
        format: str | None = None,
        cut: Cut | None = None,
    ) -> None:
        self.path = Path(path)
        self._cut = cut
        self.name = display_name or self.path.name  # in messages (e.g. the final name of a temp file)
        self.template = template
        self.time_base = Fraction(time_base or template.time_base)
        self.rate = Fraction(rate or template.frame_rate or 25)
        self.frames_written = 0
        self.audio_copied = 0
        self.audio_reencoded = 0
        self.subtitles_copied = 0
        self.streams_dropped = 0
        self._durations: dict[int, int] = {}
        self._side: av.container.InputContainer | None = None
        self._side_packets: Iterator[av.Packet] | None = None
        self._pending: av.Packet | None = None
        self._stream_map: dict[int, Any] = {}
        self._decoders: dict[int, Any] = {}
        self._audio_next: dict[int, int] = {}
        self._closed = False
        self._reformatter = VideoReformatter()

        if lossless:
            codec = "ffv1"
            if file is None and self.path.suffix.lower() != ".mkv":
                raise OutputError(f"lossless output (FFV1) needs a .mkv file, not {self.name}")
        self._choose_colour_tags(template)
        self._out = self._open_output(file, format)
        try:
            self._choose_encoding(codec, pix_fmt)
            # y4m stores no timestamps: its header's rate is the stream's time base (any
            # other would be read back as that many frames per second); MPEG-1/2 encode
            # only a rate, also taken from the time base. Their frames are numbered
            # 0, 1, 2… (from the first frame's time) in units of 1/rate.
            self._numbered = self._out.format.name == "yuv4mpegpipe" or self.codec in _RATE_ONLY
            self._stream_time_base = 1 / self.rate if self._numbered else self.time_base
            self._first_number: int | None = None
            self._setup_video(crf, preset, codec_options or {})
            if copy_streams:
                self._setup_copies()
            # Open the encoders and write the header now, so a bad combination fails
            # before any decoding work rather than at the first frame.
            self._out.start_encoding()
        except av.error.FFmpegError as exc:
            self.abort()
            raise self._start_error(codec, exc) from None
        except BaseException:
            self.abort()
            raise

    # -- setup ---------------------------------------------------------------------

    def _choose_colour_tags(self, template: VideoInfo) -> None:
        rgb_in = _is_rgb_fmt(template.pix_fmt)
        # RGB in, YUV out: limited range (the usual for video), BT.709 or 601 by size
        # unless the source names its matrix; an RGB stream's own tags describe no YUV.
        self.full_range = template.full_range and not rgb_in
        self._colorspace = template.colorspace
        if rgb_in and template.colorspace in (0, 2):
            self._colorspace = 1 if template.matrix == "ITU709" else 6
        self._color_range = 2 if self.full_range else (1 if rgb_in else template.color_range or 0)

    def _open_output(self, file: Any, format: str | None) -> av.container.OutputContainer:
        try:
            # A file object (a pipe) has no name to guess the format from: ``format`` says it.
            return av.open(file, "w", format=format) if file is not None else av.open(str(self.path), "w", format=format)
        except av.error.PermissionError:
            raise OutputError(f"cannot write {self.name}: permission denied") from None
        except (av.error.FFmpegError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise OutputError(
                f"cannot create {self.name}: {reason} (use a .mp4, .mkv or .mov name)"
            ) from None

    def _choose_encoding(self, codec: str | None, pix_fmt: str | None) -> None:
        template = self.template
        # None: the container's usual encoder (libx264 wherever H.264 fits).
        self.codec_chosen = codec is None
        self.codec = codec or default_codec(self._out)
        if pix_fmt is None and self._out.format.name == "yuv4mpegpipe":
            pix_fmt = y4m_pix_fmt(template)
        self.pix_fmt = pix_fmt or choose_pix_fmt(
            self.codec, template.pix_fmt, template.bit_depth, template.width, template.height
        )

    def _start_error(self, codec: str | None, exc: av.error.FFmpegError) -> OutputError:
        """The one-line error for an encoder that would not start."""
        if any(name in (codec or "") for name in ("nvenc", "qsv", "vaapi", "videotoolbox", "amf")):
            # FFmpeg's own message for a missing device is an opaque errno.
            return OutputError(
                f"cannot start the hardware encoder {codec} for {self.name}: it needs the matching GPU and "
                f"driver on this machine ({exc}); use a software encoder such as libx264"
            )
        return OutputError(f"cannot start writing {self.name}: {exc}")

    def _setup_video(self, crf: int, preset: str, codec_options: dict[str, str]) -> None:
        t = self.template
        try:
            canonical = av.Codec(self.codec, "w").canonical_name
        except (ValueError, av.error.FFmpegError):
            raise OutputError(f"unknown video encoder {self.codec!r}") from None
        # The y4m muxer lists only wrapped_avframe, but takes rawvideo too (as ffmpeg -c:v rawvideo does).
        raw_y4m = self._out.format.name == "yuv4mpegpipe" and canonical == "rawvideo"
        if not raw_y4m and not _container_codec_ok(self._out, canonical):
            raise OutputError(
                f"a {self.path.suffix or 'this'} file cannot hold {self.codec} video; use .mkv or .mp4, "
                f"or leave out --codec for the container's usual one ({default_codec(self._out)})"
            )
        if self.pix_fmt != t.pix_fmt and t.pix_fmt and not (
            t.pix_fmt.startswith("yuvj") and self.pix_fmt == "yuv" + t.pix_fmt[4:]
        ):
            if (t.width % 2 or t.height % 2) and "444" in self.pix_fmt:
                warnings.warn(
                    f"{t.width}x{t.height} is odd-sized, which {self.codec} cannot encode as 4:2:0; "
                    f"writing {self.pix_fmt} (full chroma), which some players cannot play",
                    VideoWarning,
                    stacklevel=3,
                )
        options = quality_options(self.codec, crf, preset)
        if t.chroma_location and av.VideoFormat(self.pix_fmt).chroma_width(64) < 64:
            options["chroma_sample_location"] = t.chroma_location
        options.update({k: str(v) for k, v in codec_options.items()})
        try:
            vs = self._out.add_stream(self.codec, rate=self.rate)
        except (ValueError, av.error.FFmpegError) as exc:
            raise OutputError(f"cannot encode {self.codec} into {self.path.suffix or 'this'} file: {exc}") from None
        vs.width, vs.height = t.width, t.height
        vs.pix_fmt = self.pix_fmt
        vs.codec_context.time_base = self._stream_time_base
        vs.time_base = self._stream_time_base
        vs.options = options
        ctx = vs.codec_context
        ctx.thread_type = "AUTO"
        if not _is_rgb_fmt(self.pix_fmt):
            ctx.color_range = self._color_range
            ctx.colorspace = self._colorspace
        ctx.color_primaries = t.color_primaries
        ctx.color_trc = t.color_trc
        if t.rotation:
            vs.set_display_rotation(t.rotation)
        self._video = vs

    def _setup_copies(self) -> None:
        t = self.template
        self._side = side = _open_input(t.path)
        selected = []
        video_used = False
        for s in side.streams:
            if s.type == "video" and not video_used and not (s.disposition & av.stream.Disposition.attached_pic):
                video_used = True
                continue
            if s.type == "audio":
                if self._can_copy(s):
                    out_s = self._out.add_stream_from_template(s)
                    self.audio_copied += 1
                else:
                    out_s = self._reencoder(s)
                    if out_s is None:
                        self.streams_dropped += 1
                        continue
                    self.audio_reencoded += 1
                    self._decoders[s.index] = s
                selected.append(s)
                self._stream_map[s.index] = out_s
            elif s.type == "subtitle":
                if self._can_copy(s):
                    out_s = self._out.add_stream_from_template(s)
                else:
                    self.streams_dropped += 1
                    warnings.warn(
                        f"dropped subtitle stream #{s.index} ({s.codec_context.name if s.codec_context else '?'}): "
                        f"a {self.path.suffix} file cannot hold it (use .mkv to keep it)",
                        VideoWarning,
                        stacklevel=4,
                    )
                    continue
                self.subtitles_copied += 1
                selected.append(s)
                self._stream_map[s.index] = out_s
            else:
                self.streams_dropped += 1
                warnings.warn(
                    f"not copying {s.type} stream #{s.index} of {t.path.name}", VideoWarning, stacklevel=4
                )
        if selected:
            if self._cut is not None and self._cut.seek_target() > 0:
                try:
                    side.seek(self._cut.seek_target(), backward=True)
                except (av.error.FFmpegError, OSError, ValueError):
                    pass  # not seekable: the packets before the cut are read and dropped
            self._side_packets = side.demux(*selected)
        else:
            side.close()
            self._side = None

    def _can_copy(self, s: Any) -> bool:
        """Whether the output's muxer accepts stream ``s`` as is.

        The codec tables FFmpeg answers queries from are optimistic (MOV claims FLAC
        but refuses it in the header), so this writes a header with just that stream
        to memory in the same format.
        """
        try:
            with av.open(io.BytesIO(), "w", format=self._out.format.name) as scratch:
                scratch.add_stream_from_template(s)
                scratch.start_encoding()
        except (ValueError, av.error.FFmpegError):
            return False
        except Exception:  # noqa: BLE001 - e.g. a trailer that cannot be written: header was fine
            return True
        return True

    def _reencoder(self, s: Any) -> Any:
        name = "aac" if _container_codec_ok(self._out, "aac") else self._out.default_audio_codec
        src_name = s.codec_context.name if s.codec_context else "?"
        try:
            enc = self._out.add_stream(name, rate=s.codec_context.sample_rate)
            # Demuxers may report only a channel count ("1 channels"); encoders want a layout.
            layout = s.codec_context.layout
            if layout.name.endswith("channels"):
                n = layout.nb_channels
                layout = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}.get(n, layout)
            enc.layout = layout
            formats = [f.name for f in (enc.codec_context.codec.audio_formats or ())]
            if formats:
                enc.format = formats[0]
        except (ValueError, av.error.FFmpegError):
            warnings.warn(
                f"dropped audio stream #{s.index} ({src_name}): a {self.path.suffix} file cannot hold it",
                VideoWarning,
                stacklevel=5,
            )
            return None
        warnings.warn(
            f"audio stream #{s.index} ({src_name}) cannot go into a {self.path.suffix} file as is; "
            f"re-encoding it to {name} (use .mkv to copy it untouched)",
            VideoWarning,
            stacklevel=5,
        )
        return enc

    # -- copied streams --------------------------------------------------------------

    def _mux_copied(self, packet: av.Packet) -> None:
        out_s = self._stream_map[packet.stream.index]
        if packet.stream.index in self._decoders:
            src = self._decoders[packet.stream.index]
            try:
                for frame in src.decode(packet):
                    self._encode_audio(packet.stream.index, frame)
            except av.error.FFmpegError:
                pass
            return
        packet.stream = out_s
        self._out.mux(packet)

    def _encode_audio(self, index: int, frame: av.AudioFrame) -> None:
        """Re-encode one decoded audio frame, numbering samples continuously from the
        first frame's timestamp (container timestamps may be rounded, e.g. to ms)."""
        rate = frame.sample_rate
        if index not in self._audio_next:
            start = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else 0
            self._audio_next[index] = round(start * rate)
        frame.pts = self._audio_next[index]
        frame.time_base = Fraction(1, rate)
        self._audio_next[index] += frame.samples
        self._out.mux(self._stream_map[index].encode(frame))

    def _pump(self, until: Fraction | None) -> None:
        """Mux copied packets whose timestamp is at or before ``until`` seconds (all if None)."""
        if self._side_packets is None:
            return
        while True:
            if self._pending is None:
                try:
                    packet = next(self._side_packets)
                except StopIteration:
                    self._side_packets = None
                    return
                except (av.error.FFmpegError, EOFError, OSError):
                    self._side_packets = None  # truncated source: keep what was copied
                    return
                if packet.dts is None or packet.size == 0:
                    continue
                if self._cut is not None:
                    placed = self._cut.place(packet)
                    if placed is None:
                        self._side_packets = None  # past the cut: the rest of the file is not needed
                        return
                    if not placed:
                        continue
                self._pending = packet
            packet = self._pending
            if until is not None and packet.dts * packet.time_base > until:
                return
            self._pending = None
            self._mux_copied(packet)

    # -- video -----------------------------------------------------------------------

    def _to_video_frame(self, image: np.ndarray | av.VideoFrame) -> av.VideoFrame:
        t = self.template
        yuv_range = "JPEG" if self.full_range else "MPEG"
        if isinstance(image, av.VideoFrame):
            src_range = "JPEG" if (t.full_range or is_full_range_fmt(image.format.name)) else "MPEG"
            frame = self._reformatter.reformat(
                image,
                width=t.width,
                height=t.height,
                format=self.pix_fmt,
                src_colorspace=t.matrix,
                dst_colorspace=t.matrix,
                src_color_range=src_range,
                dst_color_range=yuv_range,
                interpolation=_SWS_FLAGS,
            )
        else:
            if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != (t.height, t.width):
                raise ValueError(f"expected a ({t.height}, {t.width}, 3) RGB frame, got {image.shape}")
            if image.dtype == np.uint8:
                src = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            elif image.dtype == np.uint16:
                src = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb48le")
            else:
                raise ValueError(f"RGB frames must be uint8 or uint16, got {image.dtype}")
            frame = self._reformatter.reformat(
                src,
                format=self.pix_fmt,
                dst_colorspace=t.matrix,
                src_color_range="JPEG",
                dst_color_range=yuv_range,
                interpolation=_SWS_FLAGS,
            )
        frame.pict_type = 0  # never force the decoder's frame types on the encoder
        if not _is_rgb_fmt(self.pix_fmt):
            frame.color_range = self._color_range
            frame.colorspace = self._colorspace
        frame.color_primaries = t.color_primaries
        frame.color_trc = t.color_trc
        return frame

    def write(self, image: np.ndarray | av.VideoFrame, pts: int, duration: int | None = None) -> None:
        """Encode one frame at ``pts`` (integer, in ``time_base`` units) lasting ``duration``.

        ``image`` is ``(H, W, 3)`` RGB, uint8 or uint16 (rgb48), or a decoded
        ``av.VideoFrame`` of the template's stream (re-encoded without an RGB round trip).
        Timestamps must increase.
        """
        frame = self._to_video_frame(image)
        if self._numbered:
            if self._first_number is None:
                self._first_number = round(pts * self.time_base * self.rate)
            frame.pts = self._first_number + self.frames_written
        else:
            frame.pts = int(pts)
        frame.time_base = self._stream_time_base
        if duration and not self._numbered:
            self._durations[int(pts)] = int(duration)
            if len(self._durations) > 4096:  # an encoder that rewrites pts: stay bounded
                del self._durations[min(self._durations)]
        try:
            self._pump(pts * self.time_base)
            self._mux_video(self._video.encode(frame))
        except av.error.FFmpegError as exc:
            raise OutputError(f"writing {self.name} failed: {exc}") from None
        self.frames_written += 1

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            self._out.mux(packet)

    def close(self) -> None:
        """Flush the encoder, copy the rest of the audio/subtitles and finish the file."""
        if self._closed:
            return
        try:
            self._mux_video(self._video.encode(None))
            self._pump(None)
            for index, src in self._decoders.items():
                out_s = self._stream_map[index]
                try:
                    for frame in src.decode(None):
                        self._encode_audio(index, frame)
                except av.error.FFmpegError:
                    pass
                self._out.mux(out_s.encode(None))
        except av.error.FFmpegError as exc:
            self.abort()
            raise OutputError(f"writing {self.name} failed: {exc}") from None
        self._closed = True
        if self._side is not None:
            self._side.close()
        try:
            self._out.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"finishing {self.name} failed: {exc}") from None

    def abort(self) -> None:
        """Close everything without finishing the file (after an error)."""
        if self._closed:
            return
        self._closed = True
        for container in (self._side, self._out):
            if container is None:
                continue
            try:
                container.close()
            except Exception:  # noqa: BLE001 - already failing; closing is best effort
                pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
