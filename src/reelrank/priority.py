"""CPU priority of one thread, for background work that must yield the CPU to requests."""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)


def lower_thread_priority(nice: int) -> bool:
    """Add `nice` to the calling thread's niceness (up to 19). On Linux the kernel
    schedules threads, and a thread id names one; elsewhere the same call would lower the
    whole process, so nothing is done. True when lowered. A thread cannot raise its
    priority again without privileges: call it at the start of a thread that stays low."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + nice))
    except OSError as exc:
        log.warning("could not lower thread %s's priority: %s", tid, exc)
        return False
    return True
