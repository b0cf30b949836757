"""The policy selector: diversity (MMR over topics), daily fatigue caps, exploration slots,
and the hard rule of never the same creator or sound twice in a row.

Position by position it takes the candidate with the best

    normalised score - diversity_lambda * max similarity to the last `diversity_window` picks

where similarity is 1 for the same creator, else the larger of the Jaccard overlap of
hashtags and the content similarity: the cosine of the caption-and-hashtag embeddings
rescaled so that CONTENT_SIM_FLOOR counts 0 and identical text 1. Videos on one topic
share words, so raw cosines would penalise staying on a topic the viewer loves; only
near-duplicate content should weigh much.
A creator or hashtag the user has already been served `fatigue_*_per_day` times today
(UTC) is skipped. The page positions in `exploration_positions` (as many as
`exploration_fraction` of the page; a position past the end of a short page means its last
place) go to candidates from the exploration channels: videos owed traffic-pool or boost
impressions first, else new and out-of-profile videos, labelled as exploration in their
reasons. By default the slots are the last place of every ten, so exploration costs the
ranked top ten at most its tenth place (the funnel of `reelrank evaluate` measures it).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from ..index.vectors import VectorIndex
from ..types import Candidates, Query

EXPLORATION_SOURCES = ("pool", "explore", "fresh")
POOL_SOURCE = "pool"  # owed impressions: first in line for an exploration slot
CONTENT_SIM_FLOOR = 0.6
POOL = 120  # best-scored candidates considered for a page (pages are tens of videos)
EXPLORE_EXTRA = 20  # exploration candidates below the pool still considered for slots


@dataclass
class Selection:
    picked: np.ndarray  # candidate indices in page order
    exploration: list[bool]  # per picked item: placed in an exploration slot


def day_of(ts: float) -> int:
    return int(ts // 86400)


class PolicySelector:
    name = "policy"

    def __init__(
        self,
        channel_names: list[str],
        diversity_lambda: float = 0.3,
        diversity_window: int = 3,
        fatigue_creator_per_day: int = 20,
        fatigue_tag_per_day: int = 60,
        exploration_fraction: float = 0.1,
        exploration_positions: list[int] | None = None,
        content: VectorIndex | None = None,
        strict_caps: bool = False,
    ) -> None:
        self.content = content  # caption and hashtag embeddings, for the diversity term
        # False: once today's fatigue caps leave no candidate, the rest of the page is
        # chosen without them (a repeat beats a short page); True: the caps always hold.
        self.strict_caps = strict_caps
        # By channel index: whether a candidate's source is an exploration or pool channel.
        self._explores = np.array([n in EXPLORATION_SOURCES for n in channel_names], bool)
        self._pools = np.array([n == POOL_SOURCE for n in channel_names], bool)
        self.lam = diversity_lambda
        self.window = diversity_window
        self.creator_cap = fatigue_creator_per_day
        self.tag_cap = fatigue_tag_per_day
        self.fraction = exploration_fraction
        positions = exploration_positions if exploration_positions is not None else [9, 19, 29]
        self.positions = sorted(positions)

    def select(self, query: Query, cands: Candidates, scores: np.ndarray, n: int) -> Selection:
        if len(cands) == 0 or n <= 0:
            return Selection(np.zeros(0, np.int64), [])
        rng = np.random.default_rng(zlib.crc32(query.request.request_id.encode()))
        ranked = np.lexsort((rng.random(len(scores)), -scores))  # ties at random
        order, rest = ranked[:POOL], ranked[POOL:]
        top = scores[order].astype(np.float64)
        if len(rest) and self._explores.any():
            # Exploration slots may go to candidates that scored below the pool: the best
            # few videos owed pool impressions, and the best few other exploration
            # candidates.
            source = cands.source[rest]
            owed_rest = rest[self._pools[source]][:EXPLORE_EXTRA]
            other = rest[self._explores[source] & ~self._pools[source]]
            order = np.concatenate([order, owed_rest, other[:EXPLORE_EXTRA]])
        in_pool = np.arange(len(order)) < min(POOL, len(ranked))  # the rest: slots only
        table = query.table
        rows = cands.rows[order]
        creator = table.creator[rows]
        sound = table.sound[rows]
        tags = table.tag_ids[rows]  # (m, MAX_TAGS)
        s = scores[order].astype(np.float64)
        span = top.max() - top.min()  # scaled on the pool: extras fall below 0
        s = (s - top.min()) / span if span > 0 else s - top.min()
        sim = None
        if self.lam > 0:
            vecs = self.content.vectors_of(rows) if self.content is not None else None
            sim = Similarity(creator, tags, vecs)
        explorable = self._explores[cands.source[order]]
        owed = self._pools[cands.source[order]]
        available = self._under_caps(query, creator, tags)
        fraction = query.assignment.exploration_fraction
        fraction = self.fraction if fraction is None else fraction
        k_explore = min(math.floor(n * fraction + 0.5), len(self.positions))
        # A slot past the end of a short page takes its last place.
        explore_at = set(sorted(dict.fromkeys(min(p, n - 1) for p in self.positions))[:k_explore])

        picked: list[int] = []
        explored: list[bool] = []
        # Similarity of every candidate to each of the last `window` picks, a ring.
        recent = np.zeros((max(self.window, 1), len(order)))
        penalised = self.lam > 0 and sim is not None
        slot_mask = in_pool  # outside exploration slots, only the pool competes
        page_creators: dict[int, int] = {}
        page_tags: dict[int, int] = {}
        value = s
        capped = True  # today's fatigue caps in force

        def choose(pos: int, available: np.ndarray) -> tuple[int, bool, bool]:
            """The best allowed candidate for this position, whether the slot explores,
            and whether any candidate was allowed at all."""
            ok = available
            if picked:
                last = picked[-1]
                ok = available & (creator != creator[last])
                if sound[last] >= 0:
                    ok &= sound != sound[last]
            want = pos in explore_at and bool((ok & explorable).any())
            if want:
                among = ok & owed if (ok & owed).any() else ok & explorable
            else:
                among = ok & slot_mask
            choice = int(np.argmax(np.where(among, value, -np.inf)))
            return choice, want, bool(among[choice])

        for pos in range(n):
            choice, want, found = choose(pos, available)
            if not found and capped and not self.strict_caps:
                # The caps are a preference, not a reason for a short or empty page: once
                # they leave nothing, the rest of the page is chosen without them.
                capped = False
                available = np.ones(len(order), dtype=bool)
                available[picked] = False
                choice, want, found = choose(pos, available)
            if not found:
                break
            picked.append(choice)
            explored.append(want)
            if penalised:
                assert sim is not None
                recent[(len(picked) - 1) % len(recent)] = sim.row(choice)
                value = s - self.lam * recent[: min(len(picked), len(recent))].max(axis=0)
            available[choice] = False
            if not capped:
                continue
            # Fatigue within the page too: count what this page has served so far.
            c = int(creator[choice])
            page_creators[c] = page_creators.get(c, 0) + 1
            if page_creators[c] + self._today(query, "creator", c) >= self.creator_cap:
                available &= creator != c
            for t in tags[choice][tags[choice] >= 0].tolist():
                page_tags[t] = page_tags.get(t, 0) + 1
                if page_tags[t] + self._today(query, "tag", t) >= self.tag_cap:
                    available &= ~(tags == t).any(axis=1)
        return Selection(order[np.array(picked, dtype=np.int64)], explored)

    def _today(self, query: Query, kind: str, key: int) -> int:
        user = query.user
        if user is None or user.fatigue_day != day_of(query.request.now):
            return 0
        table = query.table
        if kind == "creator":
            return user.served_creators.get(table.creators.names[key], 0)
        return user.served_tags.get(table.tags.names[key], 0)

    def _under_caps(self, query: Query, creator: np.ndarray, tags: np.ndarray) -> np.ndarray:
        """(m,) True where neither the creator nor any hashtag is over today's cap."""
        ok = np.ones(len(creator), dtype=bool)
        user = query.user
        if user is None or user.fatigue_day != day_of(query.request.now):
            return ok
        table = query.table
        cap = self.creator_cap
        tired_c = [table.creators.get(c) for c, k in user.served_creators.items() if k >= cap]
        tired_t = [table.tags.get(t) for t, k in user.served_tags.items() if k >= self.tag_cap]
        if tired_c:
            ok &= ~np.isin(creator, tired_c)
        if tired_t:
            ok &= ~np.isin(tags, [t for t in tired_t if t >= 0]).any(axis=1)
        return ok


class Similarity:
    """Similarity of every candidate in the pool to every other: 1 for the same creator,
    else the larger of the Jaccard overlap of hashtags and the rescaled content cosine.
    One matrix for the pool (a few hundred microseconds for 160 candidates), which the
    page's picks read row by row."""

    def __init__(self, creator: np.ndarray, tags: np.ndarray, vecs: np.ndarray | None) -> None:
        used = tags >= 0
        count = used.sum(axis=1).astype(np.float32)
        # Only hashtags two candidates share make an overlap: the others add to a
        # candidate's own count (its union with the rest), not to an intersection.
        _, inverse, times = np.unique(tags[used], return_inverse=True, return_counts=True)
        multi = times >= 2  # per distinct hashtag: on two candidates or more
        shared = multi[inverse]
        columns = np.cumsum(multi) - 1
        onehot = np.zeros((len(tags), int(multi.sum())), dtype=np.float32)
        onehot[np.nonzero(used)[0][shared], columns[inverse[shared]]] = 1.0
        inter = onehot @ onehot.T
        union = count[:, None] + count[None, :] - inter
        sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        if vecs is not None:
            floor = CONTENT_SIM_FLOOR
            cos = vecs @ vecs.T
            np.maximum(sim, np.clip((cos - floor) / (1 - floor), 0.0, 1.0), out=sim)
        sim[creator[:, None] == creator[None, :]] = 1.0  # the diagonal too
        self.matrix = sim

    def row(self, i: int) -> np.ndarray:
        return self.matrix[i]
