"""A columnar file of named numpy arrays, the online state's snapshot format.

The magic tag, the header's length (8 bytes, little-endian), a JSON header giving each
array's dtype, shape and place, then the arrays' bytes as they lie in memory (64-byte
aligned): written part by part with no archive or copy in between, and read back with
one `frombuffer` per array. An array of at least `SPARSE_MIN` rows of which at most half
hold anything but zeros (the counters of a catalog most of which nobody has watched
yet) is stored as those rows and their indices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

MAGIC = b"RRSNAP1\n"
SPARSE_MIN = 1024
_ALIGN = 64


def pack(arrays: dict[str, np.ndarray], chunked: dict[str, list[bytes]]) -> list[Any]:
    """The parts of the file, to write one after the other. `chunked` arrays are uint8
    given as pieces (such as every user's JSON), joined a few MB at a time, not at once."""
    header: dict[str, dict[str, Any]] = {}
    body: list[Any] = []
    at = 0

    def place(parts: list[Any], nbytes: int) -> int:
        nonlocal at
        pad = -at % _ALIGN
        if pad:
            body.append(bytes(pad))
        body.extend(parts)
        at += pad + nbytes
        return at - nbytes

    for name, a in arrays.items():
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else a.copy(order="C")  # keeps a 0-d array 0-d
        entry: dict[str, Any] = {"dtype": a.dtype.str, "shape": list(a.shape)}
        if a.ndim and len(a) >= SPARSE_MIN:
            rows = np.flatnonzero(a.reshape(len(a), -1).any(axis=1))
            if len(rows) <= len(a) // 2:
                entry["rows"] = place([_bytes(rows.astype(np.int64))], 8 * len(rows))
                entry["n"] = len(rows)
                a = a[rows]
        entry["at"] = place([_bytes(a)], a.nbytes)
        header[name] = entry
    for name, pieces in chunked.items():
        n = sum(map(len, pieces))
        header[name] = {"dtype": "|u1", "shape": [n], "at": place(list(_joined(pieces)), n)}
    head = orjson.dumps(header)
    return [MAGIC, len(head).to_bytes(8, "little"), head, *body]


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays `pack` wrote: views into `blob` (read-only for `bytes`) where stored
    whole, so a reader copies what it keeps and the blob goes when the views go."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a columnar snapshot")
    n = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8 + n
    header = orjson.loads(blob[len(MAGIC) + 8 : start])
    out = {}
    for name, e in header.items():
        dt, shape = np.dtype(e["dtype"]), tuple(e["shape"])
        if "rows" not in e:
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = np.frombuffer(blob, dt, count, start + e["at"]).reshape(shape)
            continue
        rows = np.frombuffer(blob, np.int64, e["n"], start + e["rows"])
        width = int(np.prod(shape[1:], dtype=np.int64))
        full = np.zeros(shape, dt)
        values = np.frombuffer(blob, dt, e["n"] * width, start + e["at"])
        full[rows] = values.reshape((e["n"], *shape[1:]))
        out[name] = full
    return out


def _bytes(a: np.ndarray) -> memoryview:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).data


def _joined(pieces: list[bytes], size: int = 32 << 20) -> Iterator[bytes]:
    """The pieces joined into parts of about `size` bytes: one write per part, as every
    write lets go of the interpreter lock and waits to take it back from busy threads."""
    at = 0
    while at < len(pieces):
        end, n = at, 0
        while end < len(pieces) and n < size:
            n += len(pieces[end])
            end += 1
        yield b"".join(pieces[at:end])
        at = end
