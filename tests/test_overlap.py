"""The background decode/encode stages: order, bounded queues, failures and shutdown."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from sepconv_cli.overlap import BackgroundConsumer, Prefetcher


def _alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


def test_prefetcher_yields_everything_in_order():
    with Prefetcher(range(100), depth=3, name="test-prefetch") as items:
        assert list(items) == list(range(100))
    assert not _alive("test-prefetch")


def test_prefetcher_stays_at_most_depth_ahead():
    produced = 0

    def source():
        nonlocal produced
        for i in range(50):
            produced += 1
            yield i

    ahead = []
    with Prefetcher(source(), depth=3) as items:
        for consumed, _ in enumerate(items, 1):
            time.sleep(0.002)
            ahead.append(produced - consumed)
    # The queue's three plus the one the thread holds while the queue is full.
    assert max(ahead) <= 4


def test_prefetcher_raises_the_source_error_after_the_good_items():
    def source():
        yield from (1, 2)
        raise ValueError("corrupt frame")

    got = []
    with pytest.raises(ValueError, match="corrupt frame"), Prefetcher(source(), depth=2) as items:
        for item in items:
            got.append(item)
    assert got == [1, 2]


def test_prefetcher_stops_an_endless_source_when_the_consumer_leaves():
    with pytest.raises(KeyboardInterrupt), Prefetcher(itertools.count(), depth=2, name="test-endless") as items:
        for item in items:
            if item == 5:
                raise KeyboardInterrupt
    assert not _alive("test-endless")


def test_consumer_runs_items_in_order_and_finish_waits():
    seen = []

    def consume(item):
        time.sleep(0.001)
        seen.append(item)

    with BackgroundConsumer(consume, depth=2, name="test-consume") as consumer:
        for i in range(30):
            consumer.submit(i)
        consumer.finish()
        assert seen == list(range(30))
    assert not _alive("test-consume")


def test_consumer_failure_is_raised_by_the_next_submit_or_finish():
    def consume(item):
        if item == 3:
            raise OSError("disk full")

    with BackgroundConsumer(consume, depth=1) as consumer:
        with pytest.raises(OSError, match="disk full"):
            for i in range(1000):
                consumer.submit(i)
        with pytest.raises(OSError, match="disk full"):
            consumer.finish()


def test_consumer_leaving_without_finish_drops_the_rest():
    """Only the item in hand is finished; the four still queued are dropped.

    Told by events, not a clock: the first item is held until the consumer has been told to
    stop, then let go; had leaving drained the queue, the other items would be consumed too.
    """
    seen = []
    in_hand, let_go = threading.Event(), threading.Event()

    def consume(item):
        seen.append(item)
        if item == 0:
            in_hand.set()
            assert let_go.wait(timeout=60)

    with pytest.raises(RuntimeError, match="caller failed"), BackgroundConsumer(
        consume, depth=5, name="test-abandon"
    ) as consumer:
        for i in range(5):
            consumer.submit(i)
        assert in_hand.wait(timeout=60)

        def release_once_stopping() -> None:
            # The stop flag is set first thing on leaving the block; the time-out only
            # lets a consumer that wrongly drains its queue fail instead of hanging.
            consumer._stop.wait(timeout=10)
            let_go.set()

        threading.Thread(target=release_once_stopping, daemon=True).start()
        raise RuntimeError("caller failed")
    assert not _alive("test-abandon")
    assert seen == [0]
