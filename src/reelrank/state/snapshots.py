"""Snapshots of the online state: one atomic write of the state and the log offsets it
reflects, incremental in its users."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from ..arrays import Mirror
from ..storage import StateStore
from .columnar import MAGIC, pack, unpack
from .fold import StateFold
from .profiles import UserState

SNAPSHOT = "online_state"


class Snapshots:
    """Writes and restores the fold's snapshot.

    Under the writer lock only the users written since the last snapshot are serialised
    again; the others keep the bytes the last one made, so the lock is held for what
    changed, not for every user; the per-video columns are copied under it into buffers
    kept from one snapshot to the next, and the co-engagement graph's changes are copied
    under it and serialised after. One snapshot at a time, in the order taken."""

    def __init__(self, fold: StateFold, store: StateStore) -> None:
        self.fold = fold
        self.store = store
        self._writing = threading.Lock()
        # The per-video columns are copied under the lock into buffers kept between
        # snapshots (valid until the next one, which waits for `_writing`).
        self._mirror = Mirror()

    def save(self, offsets: Callable[[], tuple[int, int]]) -> None:
        """Write the snapshot; `offsets` gives the event and impression offsets the state
        reflects, read under the writer lock with the state itself."""
        with self._writing:
            self._save(offsets)

    def _save(self, offsets: Callable[[], tuple[int, int]]) -> None:
        f = self.fold
        with f.lock:
            offset, impression_offset = offsets()
            blobs, users = f.user_blobs, f.users
            for uid in f.dirty_users:
                found = users.get(uid)
                if found is not None:
                    blobs[uid] = orjson.dumps(found.to_json())
            f.dirty_users.clear()
            user_ids = list(users)
            user_bytes = [blobs[uid] for uid in user_ids]
            meta = {
                "offset": offset,
                "impression_offset": impression_offset,
                "size": f.table.size,
                "user_ids": user_ids,
                "related_users": list(f.related.user_ids),
                "reporters": {str(r): sorted(u) for r, u in f.reporters.items()},
                "saved_at": time.time(),
            }
            size, mirror = f.table.size, self._mirror
            arrays = f.counters.to_arrays(size, mirror)
            arrays.update(f.pools.to_arrays(size, mirror))
            arrays.update(f.popularity.to_arrays(size, mirror))
            arrays.update(f.related.to_arrays())
            graph = f.coengagement.changes()  # copies; converted after the lock
        arrays.update(f.coengagement.to_arrays(graph))
        # Each user's JSON end to end, with the lengths: a restore keeps each user's
        # bytes as they are, and a snapshot parses or writes no JSON of everyone.
        arrays["user_json_lengths"] = np.fromiter(map(len, user_bytes), np.int64, len(user_bytes))
        arrays["meta"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
        self.store.save_snapshot(SNAPSHOT, pack(arrays, {"user_json": user_bytes}))

    def restore(self) -> tuple[int, int] | None:
        """Load the last snapshot into the fold (under its lock); the event and impression
        offsets it reflects, or None when there is none."""
        blob = self.store.load_snapshot(SNAPSHOT)
        if blob is None:
            return None
        f = self.fold
        if blob.startswith(MAGIC):
            arrays = unpack(blob)  # views into the blob: each reader copies what it keeps
        else:  # the zipped numpy archive earlier versions wrote
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        del blob
        meta: dict[str, Any] = orjson.loads(arrays.pop("meta").tobytes())
        f.counters.load_arrays(arrays)
        f.pools.load_arrays(arrays)
        f.popularity.load_arrays(arrays)
        f.reporters = {int(r): set(u) for r, u in meta.get("reporters", {}).items()}
        s = f.settings
        half_life, seen_max, session_len = (
            s.affinity_half_life_h * 3600.0,
            s.seen_max,
            s.session_len,
        )
        blobs: dict[str, bytes] = {}
        if "user_json" in arrays:
            data = arrays.pop("user_json").data
            ends = np.cumsum(arrays["user_json_lengths"]).tolist()
            for uid, start, end in zip(meta["user_ids"], [0, *ends][:-1], ends, strict=True):
                # The bytes this snapshot holds for the user, kept as they are: the first
                # snapshot after a start serialises only the users written since.
                raw = blobs[uid] = data[start:end].tobytes()
                f.users.restore(uid, raw)  # parsed when the user is first used
            del data
        else:  # a snapshot from before the users' bytes were kept apart
            for uid, raw in meta["users"].items():
                f.users[uid] = UserState.from_json(raw, half_life, seen_max, session_len)
                blobs[uid] = orjson.dumps(raw)
        f.user_blobs = blobs
        f.dirty_users = set()
        if not f.coengagement.load_arrays(arrays) and "coengagement" in meta:
            f.coengagement.load_json(meta["coengagement"])
        f.related.load(arrays, meta.get("related_users", []))
        return int(meta["offset"]), int(meta["impression_offset"])
