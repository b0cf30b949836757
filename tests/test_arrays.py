"""The one growth rule of row-indexed arrays (`reelrank.arrays`)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.arrays import Mirror, doubled, grown


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


@settings(max_examples=200)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from([np.int8, np.int64, np.float32, np.float64]),
            st.integers(0, 300),
            st.sampled_from([(), (3,)]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_mirror_copies_exactly_and_reuses_its_buffers(
    calls: list[tuple[str, type, int, tuple[int, ...]]],
) -> None:
    """Each copy equals its source and does not follow it afterwards; a copy under a name
    whose buffer fits writes into the same memory as the last one (nothing allocated)."""
    mirror = Mirror()
    rng = np.random.default_rng(0)
    last: dict[str, np.ndarray] = {}
    for name, dtype, n, tail in calls:
        src = (rng.normal(size=(n, *tail)) * 50).astype(dtype)
        before = last.get(name)
        fits = (
            before is not None
            and before.dtype == src.dtype
            and before.shape[1:] == src.shape[1:]
            and n <= len(mirror._buffers[name])
        )
        out = mirror(name, src)
        assert out.dtype == src.dtype and out.shape == src.shape
        np.testing.assert_array_equal(out, src)
        assert not np.shares_memory(out, src)
        if fits and before is not None and n and len(before):
            assert out.base is before.base  # the same buffer, written again
        src += 1  # the source moves on; the copy does not
        np.testing.assert_array_equal(out + 1, src)
        last[name] = out
    assert mirror.nbytes == sum(b.nbytes for b in mirror._buffers.values())
