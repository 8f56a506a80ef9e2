"""Decode and encode in background threads, so the network never waits for I/O.

``interpolate_video`` runs three stages: decoding (with shot-cut detection), the
network, and encoding. Run one after another, a GPU would sit idle while FFmpeg decodes
and encodes each frame; here the first and last stages each get a thread and a bounded
queue, and the network's thread only computes. FFmpeg, numpy and torch release the GIL
in their heavy calls, so the three really run at once; the queues bound the memory to a
few frames whatever the length of the video.

Failures travel to the caller: an exception in a stage is re-raised in the thread that
drives the pipeline at its next call, and when the caller fails (or is interrupted),
leaving the ``with`` block stops both threads before the exception goes on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["BackgroundConsumer", "Prefetcher"]

T = TypeVar("T")

# How often a blocked thread looks at its stop flag, in seconds.
_POLL = 0.05
# How long an interrupted caller waits for a prefetch thread stuck in its source.
_ABANDON_S = 2.0


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Block until ``item`` is queued (True) or ``stop`` is set (False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, up to ``depth`` items ahead.

    Use as ``with Prefetcher(frames, 4) as items: for item in items: ...``; an exception
    raised by ``source`` comes out of the ``for`` loop.
    """

    def __init__(self, source: Iterable[T], depth: int, name: str = "sepconv-prefetch") -> None:
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            for item in self._source:
                if not _put(self._queue, item, self._stop):
                    return
            _put(self._queue, _End(), self._stop)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            _put(self._queue, _Failure(error), self._stop)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self._stop.set()
        # After a failure or Ctrl-C, a source blocked in a read that may never return (a
        # pipe whose writer is still open) must not hold the caller: wait a moment, then
        # leave the daemon thread to finish (or die with the process) on its own.
        self._thread.join(timeout=None if exc_type is None else _ABANDON_S)


class BackgroundConsumer:
    """Call ``consume(item)`` for each submitted item, in order, in a background thread.

    ``submit`` blocks while ``depth`` items wait, and re-raises a failure of an earlier
    item; ``finish`` waits for everything submitted and re-raises a failure. Use it as a
    context manager: leaving the block without ``finish`` (an exception) drops what is
    still queued and stops the thread.
    """

    def __init__(self, consume: Callable[[Any], None], depth: int, name: str = "sepconv-consume") -> None:
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                return
            try:
                self._consume(item)
            except BaseException as error:  # noqa: BLE001 - handed to the producer
                self._failure = error
                return

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def submit(self, item: object) -> None:
        while True:
            self._raise_failure()
            if not self._thread.is_alive():
                raise RuntimeError("the background consumer has stopped")
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.submit(_End())
        self._thread.join()
        self._raise_failure()

    def __enter__(self) -> BackgroundConsumer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
