"""The one growth rule of row-indexed arrays (`reelrank.arrays`)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.arrays import doubled, grown


@given(capacity=st.integers(0, 5000), need=st.integers(0, 100_000))
def test_doubling_holds_what_is_needed_and_never_more_than_twice_it(
    capacity: int, need: int
) -> None:
    got = doubled(capacity, need)
    assert got >= need and got >= capacity
    if need > max(capacity, 1):
        assert got < 2 * need  # amortised: never more than twice what is asked
        assert got % max(capacity, 1) == 0  # a power-of-two multiple of the old size


@given(
    rows=st.integers(1, 50),
    cols=st.integers(1, 4),
    extra=st.integers(0, 50),
    fill=st.floats(-5, 5, allow_nan=False),
)
def test_grown_keeps_every_row_and_fills_the_new_ones(
    rows: int, cols: int, extra: int, fill: float
) -> None:
    old = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    new = grown(old, rows + extra, fill)
    assert new.shape == (rows + extra, cols) and new.dtype == old.dtype
    assert np.array_equal(new[:rows], old)
    assert np.all(new[rows:] == np.float32(fill))
    assert new.base is None or new.base is not old  # a copy: readers of old see no change


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", ""]), max_size=40),
    st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), st.integers(0, 99)),
    st.integers(1, 7),
)
def test_chunked_lookups_and_numbering_are_the_one_pass_answers(
    keys: list[str], table: dict[str, int], chunk: int
) -> None:
    """`looked_up` and `numbered` give what one pass over every key gives, whatever the
    chunk (duplicates: the later position wins, as in `dict(zip(...))`)."""
    import reelrank.arrays as arrays_module

    saved = arrays_module.GIL_CHUNK
    arrays_module.GIL_CHUNK = chunk
    try:
        got = arrays_module.looked_up(table.get, keys, -1)
        assert got.dtype == np.int64
        assert got.tolist() == [table.get(k, -1) for k in keys]
        one_pass = dict(zip(keys, range(3, 3 + len(keys)), strict=True))
        assert arrays_module.numbered(keys, 3) == one_pass
    finally:
        arrays_module.GIL_CHUNK = saved
