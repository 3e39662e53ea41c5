"""Run an iterator in a thread of its own, a few items ahead of its consumer.

A batch is read, checked and rendered (Python, holding the GIL) while the previous chunk's
INSERT runs on the database server (the driver waits on its socket without the GIL): on two
cores the two overlap instead of taking turns."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_POLL_SECONDS = 0.1


class _End:
    pass


_END = _End()


class Prefetched(Generic[T]):
    """Iterate `source` in a daemon thread, at most `depth` items ahead. An exception of the
    source is raised to the consumer at the item it stopped at. Use it as a context manager:
    leaving it stops the thread (the source is not iterated further) and waits for it."""

    def __init__(self, source: Iterator[T], depth: int, name: str) -> None:
        self._source = source
        self._items: queue.Queue[T | _End | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _put(self, item: T | _End | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._items.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        finally:  # a generator left early is closed here, in its own thread
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
        self._put(_END)

    def __enter__(self) -> Prefetched[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._items.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
