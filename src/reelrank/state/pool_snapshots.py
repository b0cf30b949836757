"""Snapshots of the traffic pools (`PoolBook` mixes this in): every per-video array, the
remembered pool impressions, the tier totals and the funnel counts, as named arrays."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import orjson

from ..arrays import Copy, copied

# Per video row: (name, dtype, fill). All grow together and go into snapshots.
ROW_ARRAYS: tuple[tuple[str, Any, float], ...] = (
    ("stage", np.int8, 0),
    ("tier", np.int8, -1),  # -1: never entered; -2: never will (a re-upload)
    ("served", np.int32, 0),  # pool impressions in the current tier
    ("judge_at", np.float64, 0.0),
    ("tier_started", np.float64, 0.0),
    ("heat_mark", np.float64, 0.0),  # heat when stopped or cooled
    ("mark_ts", np.float64, 0.0),
    ("revivals", np.int16, 0),
    ("boost_left", np.int32, 0),
    ("boost_used", np.int32, 0),  # boosted impressions served so far
    ("last_quality", np.float32, np.nan),  # at the last judgement
    ("epoch", np.int32, 0),  # tiers started, so stale events are dropped
)


class PoolSnapshots:
    """What a pool snapshot holds, declared for `PoolBook`."""

    tier: np.ndarray
    sizes: list[int]
    impressions: OrderedDict[tuple[str, str], list[int]]
    tier_totals: np.ndarray
    funnel: dict[str, int]
    promotions_by_tier: list[int]
    stops_by_tier: list[int]
    version: int
    boost_version: int
    generation: int

    def ensure(self, rows: int) -> None:
        raise NotImplementedError

    def to_arrays(self, size: int, copy: Copy = copied) -> dict[str, np.ndarray]:
        out = {
            f"pool_{name}": copy(f"pool_{name}", getattr(self, name)[:size])
            for name in [n for n, _, _ in ROW_ARRAYS] + ["counts"]
        }
        keys = list(self.impressions)
        out["pool_impression_keys"] = np.frombuffer(orjson.dumps(keys), dtype=np.uint8)
        out["pool_impression_values"] = np.array(
            list(self.impressions.values()), dtype=np.int64
        ).reshape(-1, 3)
        out["pool_tier_totals"] = self.tier_totals.copy()
        out["pool_counts_meta"] = np.array(
            [*self.funnel.values(), *self.promotions_by_tier, *self.stops_by_tier], np.int64
        )
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "pool_epoch" not in arrays:
            return  # a snapshot from before pools: every young video enters afresh
        size = len(arrays["pool_stage"])
        self.ensure(size)
        for name in [n for n, _, _ in ROW_ARRAYS] + ["counts"]:
            getattr(self, name)[:size] = arrays[f"pool_{name}"]
        keys = orjson.loads(arrays["pool_impression_keys"].tobytes())
        values = arrays["pool_impression_values"].tolist()
        self.impressions = OrderedDict((tuple(k), v) for k, v in zip(keys, values, strict=True))
        totals = arrays["pool_tier_totals"]
        tiers = min(len(totals), len(self.sizes))
        self.tier_totals[:tiers] = totals[:tiers]
        counts = arrays["pool_counts_meta"].tolist()
        n_funnel, n_tiers = len(self.funnel), len(self.sizes)
        if len(counts) == n_funnel + 2 * n_tiers:  # tiers unchanged since the snapshot
            for key, value in zip(list(self.funnel), counts[:n_funnel], strict=True):
                self.funnel[key] = int(value)
            self.promotions_by_tier = [int(x) for x in counts[n_funnel : n_funnel + n_tiers]]
            self.stops_by_tier = [int(x) for x in counts[n_funnel + n_tiers :]]
        # Tiers beyond a shortened pool_sizes list finish at the last tier.
        np.minimum(self.tier, len(self.sizes) - 1, out=self.tier)
        self.version += 1
        self.boost_version += 1
        self.generation += 1  # readers of the testing set read every row again
