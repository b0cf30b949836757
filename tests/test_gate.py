"""The feed gate: at most k holders, waiters admitted in the order they came."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.services.gate import Gate


def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@settings(max_examples=15, deadline=None)
@given(limit=st.integers(1, 3), threads=st.integers(1, 8))
def test_waiters_enter_in_arrival_order_and_never_more_than_the_limit(
    limit: int, threads: int
) -> None:
    """The gate full, threads queue one after another; each place freed (one at a time)
    admits the longest waiting, and never more than `limit` are inside."""
    gate = Gate(limit)
    for _ in range(limit):
        gate.__enter__()  # the gate is full
    entered: list[int] = []
    inside = [0]
    most = [0]
    lock = threading.Lock()
    leave = [threading.Event() for _ in range(threads)]

    def visit(i: int) -> None:
        with gate:
            with lock:
                entered.append(i)
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            leave[i].wait(10)
            with lock:
                inside[0] -= 1

    workers = []
    for i in range(threads):  # each queued before the next arrives
        t = threading.Thread(target=visit, args=(i,))
        t.start()
        _wait_for(lambda i=i: gate.waiting == i + 1)
        workers.append(t)
    for j in range(threads):
        if j < limit:
            gate.__exit__(None, None, None)  # one of the places held from the start
        else:
            leave[entered[j - limit]].set()  # the earliest inside leaves, handing its place
        _wait_for(lambda j=j: len(entered) == j + 1)
    for i in range(threads):
        leave[i].set()
    for t in workers:
        t.join(10)
    for _ in range(max(limit - threads, 0)):
        gate.__exit__(None, None, None)
    assert entered == list(range(threads))
    assert most[0] <= limit
    assert gate.waiting == 0 and gate._free == limit


def test_a_place_is_given_back_when_the_holder_raises() -> None:
    gate = Gate(1)
    with pytest.raises(RuntimeError), gate:
        raise RuntimeError("the pipeline failed")
    done = threading.Event()

    def visit() -> None:
        with gate:
            done.set()

    threading.Thread(target=visit).start()
    assert done.wait(5)


def test_no_limit_lets_everyone_in() -> None:
    gate = Gate(0)
    for _ in range(100):
        gate.__enter__()
    assert gate.waiting == 0
