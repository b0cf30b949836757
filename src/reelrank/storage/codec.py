"""Parameters on the wire between the trainer and serving.

Full snapshots and dense weights carry nested payloads of tensors, numbers and strings.
They are written as safetensors (the tensors as raw buffers, everything else as JSON in
its metadata, each tensor's place marked there), behind a magic tag: loading is a header
parse and a copy per tensor, with no unpickler and no code (a replay applies hundreds of
these a minute). Blobs written with `torch.save` by earlier versions still load, with
`weights_only=True` (tensors, numbers and strings only). Sparse deltas, published every
few seconds, carry only ids and float rows, so they use a plain binary layout: a magic
tag, the length of a JSON header (slots, their ids, evictions and row shapes), then every
slot's rows as float32.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import orjson
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

SPARSE_MAGIC = b"RRS1"
TENSORS_MAGIC = b"RRT1"
_TENSOR = "__tensor__"  # marks a tensor's place in the JSON of the payload


def encode(obj: dict[str, Any]) -> bytes:
    """A nested payload (dicts, lists, tensors, numpy arrays, numbers, strings) as bytes."""
    tensors: dict[str, torch.Tensor] = {}

    def lift(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if isinstance(x, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = x.detach().cpu().contiguous()
            return {_TENSOR: name}
        if isinstance(x, dict):
            return {str(k): lift(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [lift(v) for v in x]
        return x

    tree = orjson.dumps(lift(obj), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return TENSORS_MAGIC + st_save(tensors, metadata={"payload": tree})


def encode_sparse(slots: dict[str, dict[str, Any]], sparse_version: int) -> bytes:
    """Sparse deltas (slot -> ids, default, evicted, vectors (n, d)) as bytes."""
    header: dict[str, Any] = {"sparse_version": sparse_version, "slots": {}}
    parts = []
    for slot, delta in slots.items():
        vectors = np.ascontiguousarray(np.asarray(delta["vectors"], dtype=np.float32))
        header["slots"][slot] = {
            "ids": delta["ids"],
            "default": bool(delta["default"]),
            "evicted": delta["evicted"],
            "shape": list(vectors.shape),
        }
        parts.append(vectors.tobytes())
    head = orjson.dumps(header)
    return SPARSE_MAGIC + struct.pack("<I", len(head)) + head + b"".join(parts)


def decode(blob: bytes) -> dict[str, Any]:
    """Either layout back to a payload; sparse vectors come back as numpy arrays."""
    if blob[:4] == TENSORS_MAGIC:
        return _decode_tensors(blob[4:])
    if blob[:4] != SPARSE_MAGIC:
        out: dict[str, Any] = torch.load(io.BytesIO(blob), weights_only=True)
        return out
    (size,) = struct.unpack("<I", blob[4:8])
    header = orjson.loads(blob[8 : 8 + size])
    offset = 8 + size
    slots = {}
    for slot, meta in header["slots"].items():
        rows, dim = meta["shape"]
        n = rows * dim * 4
        vectors = np.frombuffer(blob, np.float32, rows * dim, offset).reshape(rows, dim)
        offset += n
        slots[slot] = {
            "ids": meta["ids"],
            "default": meta["default"],
            "evicted": meta["evicted"],
            "vectors": vectors,
        }
    return {"slots": slots, "sparse_version": header["sparse_version"]}


# safetensors dtypes numpy reads (others, such as BF16, go through safetensors' loader)
_NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
_PLAIN = frozenset({str, int, float, bool, type(None)})  # JSON values holding no tensor


def _decode_tensors(raw: bytes) -> dict[str, Any]:
    """The payload of `encode`. The tensors are read from the safetensors layout (an
    8-byte header length, a JSON header of dtype, shape and data offsets, the data) and
    copied by numpy, which lets other threads run meanwhile: safetensors' own loader
    holds the interpreter lock for the whole copy (175 ms for a 200 MB model, in which
    no request is served). Lists of plain values (a table's ids) are kept as parsed."""
    (size,) = struct.unpack("<Q", raw[:8])
    header = orjson.loads(raw[8 : 8 + size])
    tree = orjson.loads(header.pop("__metadata__")["payload"])
    if all(meta["dtype"] in _NUMPY_DTYPES for meta in header.values()):
        base = 8 + size
        tensors = {}
        for name, meta in header.items():
            begin, end = meta["data_offsets"]
            dtype = np.dtype(_NUMPY_DTYPES[meta["dtype"]])
            flat = np.frombuffer(raw, dtype, (end - begin) // dtype.itemsize, base + begin)
            tensors[name] = torch.from_numpy(flat.reshape(meta["shape"]).copy())
    else:
        tensors = st_load(raw)

    def place(x: Any) -> Any:
        if isinstance(x, dict):
            if len(x) == 1 and _TENSOR in x:
                return tensors[x[_TENSOR]]
            return {k: place(v) for k, v in x.items()}
        if isinstance(x, list) and not _PLAIN.issuperset(map(type, x)):  # (a C-level pass)
            return [place(v) for v in x]
        return x  # a plain value, or a list of them (a table's ids): as parsed

    out: dict[str, Any] = place(tree)
    return out
