"""A gate that lets at most k threads through at once, in the order they came.

The feed pipeline is Python and numpy under one interpreter lock: pipelines computed side
by side do not run faster, they take turns on the lock, and each turn handed back costs a
thread that gave it up (a sort, a vector search) up to a switch interval (5 ms) behind
every other runnable thread. Thirty-two request threads at a million videos, in process:
111-126 feeds/s with every thread computing at once, 145-153 with one at a time. Python's
locks and semaphores wake waiters in no particular order, so a waiting request could wait
through many others' turns; the gate hands each freed place to the longest waiting.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class Gate:
    """At most `limit` holders at once (0: no limit); waiters enter first come, first
    served. Use as a context manager."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._free = limit
        self._waiting: deque[threading.Event] = deque()

    def __enter__(self) -> None:
        if self.limit <= 0:
            return
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the place is handed over by the holder that leaves

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.limit <= 0:
            return
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # its place, handed on
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)
