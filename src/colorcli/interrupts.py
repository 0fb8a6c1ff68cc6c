"""Ctrl-C held back over work that must be done whole: a training step, a result being recorded."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so that the work in it is done whole or not at all.

    A training step moves the data order and RNG, BatchNorm statistics and every weight; a
    checkpoint written in the middle of one would match no step. A batch that has taken a
    finished photo off its queue must also report it, or the photo is written but never said
    to be (and counted as not started). The first SIGINT inside the block is raised as
    ``KeyboardInterrupt`` when the block ends; a second one is raised at once, for a user who
    will not wait. Signal handlers can only be set from the main thread; elsewhere, or where
    SIGINT is ignored (a background job) or handled outside Python, this does nothing.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    caught: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        if caught:
            previous(signum, frame)  # the second Ctrl-C: the usual handler raises now
        caught.append((signum, frame))

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        previous(*caught[0])  # the usual handler: raises KeyboardInterrupt


__all__ = ["sigint_deferred"]
