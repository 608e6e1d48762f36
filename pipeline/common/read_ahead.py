"""Run a producer generator in a thread of its own, a bounded number of items ahead of its consumer.

Extract decodes and scales frames (FFmpeg and swscale release the GIL) while the consuming thread
computes flow and audio features: on two cores a one-worker extract then uses both.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(make: Callable[[], Iterator[T]], depth: int = 8) -> Iterator[T]:
    """Items of `make()` in order, produced in a background thread at most `depth` ahead.

    The generator is created, run and closed in the producer thread (a generator must be closed by the
    thread that runs it). An exception in the producer is raised in the consumer at the point the item
    would have come. When the consumer stops early (or is closed), the producer stops at its next item
    and closes its generator, so files it holds open are closed.
    """
    outbox: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                outbox.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            items = make()
            try:
                for item in items:
                    if not offer(item):
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
            offer(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            offer(_Failed(exc))

    thread = threading.Thread(target=produce, name="avfix-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = outbox.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
