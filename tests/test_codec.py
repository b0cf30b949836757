"""The parameter wire format: what the trainer publishes, serving reads back unchanged."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.storage.codec import SPARSE_MAGIC, TENSORS_MAGIC, decode, encode, encode_sparse

leaf = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.builds(
        lambda shape, dtype, seed: torch.from_numpy(
            np.asarray(np.random.default_rng(seed).normal(size=shape) * 100).astype(dtype)
        ),
        st.lists(st.integers(0, 4), max_size=3).map(tuple),
        st.sampled_from([np.float32, np.float64, np.int64]),
        st.integers(0, 99),
    ),
)
payload = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.recursive(
        leaf,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)
        ),
        max_leaves=12,
    ),
    max_size=4,
)


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(payload)
def test_a_payload_comes_back_as_it_went(obj: dict) -> None:
    blob = encode(obj)
    assert blob[:4] == TENSORS_MAGIC
    assert same(decode(blob), obj)


def test_numpy_arrays_come_back_as_tensors_and_a_tensor_marker_stays_data() -> None:
    obj = {"rows": np.arange(6, dtype=np.float32).reshape(2, 3), "x": {"__tensor__": 1, "y": 2}}
    back = decode(encode(obj))
    assert torch.equal(back["rows"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert back["x"] == {"__tensor__": 1, "y": 2}
    back["rows"] += 1  # writable: a copy, not a view of the blob


def test_tensors_numpy_cannot_hold_come_back_through_the_safetensors_loader() -> None:
    obj = {"w": torch.arange(4, dtype=torch.bfloat16), "b": torch.ones(2), "ids": ["a", "b"]}
    back = decode(encode(obj))
    assert same(back, obj)
    back["b"] += 1  # writable: a copy, not a view of the blob
    assert torch.equal(back["b"], torch.full((2,), 2.0))


def test_blobs_written_by_torch_save_still_load() -> None:
    buf = io.BytesIO()
    torch.save({"state": {"w": torch.ones(2, 2)}, "examples": 7}, buf)
    back = decode(buf.getvalue())
    assert back["examples"] == 7 and torch.equal(back["state"]["w"], torch.ones(2, 2))


def test_sparse_deltas_keep_ids_and_rows() -> None:
    vectors = np.arange(8, dtype=np.float32).reshape(2, 4)
    blob = encode_sparse(
        {"video": {"ids": ["a", "b"], "default": False, "evicted": ["c"], "vectors": vectors}}, 5
    )
    assert blob[:4] == SPARSE_MAGIC
    back = decode(blob)
    assert back["sparse_version"] == 5
    slot = back["slots"]["video"]
    assert slot["ids"] == ["a", "b"] and slot["evicted"] == ["c"]
    np.testing.assert_array_equal(slot["vectors"], vectors)


def test_an_unknown_object_is_refused_when_written() -> None:
    with pytest.raises(TypeError):
        encode({"x": object()})
