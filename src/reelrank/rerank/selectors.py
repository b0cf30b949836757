"""Selectors decide order and page: no two in a row from one creator or sound."""

from __future__ import annotations

import zlib

import numpy as np

from ..pipeline.query import Candidates, Query


class NoRepeatSelector:
    """Best score first, skipping any video whose creator or sound matches the one just
    placed; stops at `n`, or earlier when nothing left can follow without a repeat."""

    name = "no_repeat"

    def select(self, query: Query, cands: Candidates, scores: np.ndarray, n: int) -> np.ndarray:
        # Equal scores (a cold catalog) are ordered at random per request, not by row.
        rng = np.random.default_rng(zlib.crc32(query.request.request_id.encode()))
        order = np.lexsort((rng.random(len(scores)), -scores)).tolist()
        creators = query.table.creator[cands.rows].tolist()
        sounds = query.table.sound[cands.rows].tolist()
        picked: list[int] = []
        pending = order
        while len(picked) < n and pending:
            last_c = creators[picked[-1]] if picked else None
            last_s = sounds[picked[-1]] if picked else None
            for j, i in enumerate(pending):
                if creators[i] != last_c and (sounds[i] < 0 or sounds[i] != last_s):
                    picked.append(i)
                    del pending[j]
                    break
            else:
                break
        return np.array(picked, dtype=np.int64)
