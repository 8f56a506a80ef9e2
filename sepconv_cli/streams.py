"""stdin and stdout as the raw byte streams a video pipe (``SOURCE -``, ``--out -``) needs."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from typing import BinaryIO


class FdWriter(io.RawIOBase):
    """Writes all of every buffer to a file descriptor (a raw pipe may take part of one),
    and buffers nothing, so closing after the reader has gone cannot fail again."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001 - bytes-like
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        return done

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self.fd)
            except OSError:
                pass
        super().close()


def _buffer(stream: object) -> BinaryIO:
    return getattr(stream, "buffer", stream)  # type: ignore[return-value]


def stdout_stream(fallback: Callable[[], BinaryIO] | None = None) -> io.RawIOBase | BinaryIO:
    """stdout for the video stream alone. Its file descriptor is duplicated for the
    stream and fd 1 then points at stderr, so nothing else that writes to stdout (a
    library, a compiler's message) can corrupt the stream.

    ``fallback`` gives the binary stream to use when stdout has no real descriptor (a
    test runner's capture); by default its ``buffer``."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return fallback() if fallback is not None else _buffer(sys.stdout)
    sys.stdout.flush()
    stream_fd = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    return FdWriter(stream_fd)


def stdin_stream(fallback: Callable[[], BinaryIO] | None = None) -> io.RawIOBase | BinaryIO:
    """stdin, unbuffered: a read returns what the pipe has (no waiting for a full buffer),
    and a read left blocked by Ctrl-C holds no buffer lock that would abort Python's exit.

    ``fallback`` as for ``stdout_stream``."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return fallback() if fallback is not None else _buffer(sys.stdin)
    return io.FileIO(os.dup(fd), "rb")
