"""Parameters on the wire between the trainer and serving.

Full snapshots and dense weights are torch state dicts, saved with `torch.save` and loaded
with `weights_only=True` (tensors, numbers and strings only: no pickled code). Sparse
deltas, published every few seconds, carry only ids and float rows, so they use a plain
binary layout that decodes without an unpickler at all: a magic tag, the length of a JSON
header (slots, their ids, evictions and row shapes), then every slot's rows as float32.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import orjson
import torch

SPARSE_MAGIC = b"RRS1"


def encode(obj: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


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
