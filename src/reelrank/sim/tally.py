"""What one system's closed-loop run produced, and the figures reported from it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..evaluate.metrics import gini
from .catalog import SimCatalog
from .viewers import Reaction

BLOCK = 10  # consecutive videos per diversity block


class Tally:
    """Counts as the run goes: sessions, reactions, impressions per video, arrivals."""

    def __init__(self, catalog: SimCatalog, discovery_impressions: int = 10) -> None:
        n = len(catalog)
        self.catalog = catalog
        self.discovery_impressions = discovery_impressions
        names = {c: j for j, c in enumerate(dict.fromkeys(catalog.creators))}
        self.creator_of = np.array([names[c] for c in catalog.creators], dtype=np.int64)
        self.n_creators = len(names)
        self.impressions = np.zeros(n, dtype=np.int64)
        self.total = 0
        self.arrival_step = np.full(n, -1, dtype=np.int64)
        self.arrival_total = np.zeros(n, dtype=np.int64)
        self.arrival_at = np.zeros(n)
        self.first_step = np.full(n, -1, dtype=np.int64)
        self.first_total = np.zeros(n, dtype=np.int64)
        self.first_at = np.zeros(n)
        self.sessions: list[tuple[int, int, int]] = []  # (round, videos, watch ms)
        self.counts = dict.fromkeys(
            ("finished", "liked", "shared", "commented", "followed", "skipped", "ni"), 0
        )
        self.match_sum = 0.0
        self.duration_ms_sum = 0
        self.blocks = 0
        self.block_tags = 0
        self.block_creators = 0
        self.span_s = 0.0  # simulated time the run covered
        self._round = 0
        self._videos: list[int] = []
        self._watch_ms = 0

    def arrived(self, videos: list[int], step: int, at: float) -> None:
        self.arrival_step[videos] = step
        self.arrival_total[videos] = self.total
        self.arrival_at[videos] = at

    def begin_session(self, round_: int) -> None:
        self._round, self._videos, self._watch_ms = round_, [], 0

    def viewed(self, i: int, r: Reaction, step: int, at: float) -> None:
        if self.impressions[i] == 0:
            self.first_step[i] = step
            self.first_total[i] = self.total
            self.first_at[i] = at
        self.impressions[i] += 1
        self.total += 1
        self._videos.append(i)
        self._watch_ms += r.watch_ms
        self.match_sum += r.match
        self.duration_ms_sum += int(self.catalog.duration_ms[i])
        c = self.counts
        c["finished"] += r.finished
        c["liked"] += r.liked
        c["shared"] += r.shared
        c["commented"] += r.commented
        c["followed"] += r.followed
        c["skipped"] += r.skipped
        c["ni"] += r.not_interested

    def end_session(self) -> None:
        self.sessions.append((self._round, len(self._videos), self._watch_ms))
        tags = self.catalog.tags
        for start in range(0, len(self._videos) - BLOCK + 1, BLOCK):
            block = self._videos[start : start + BLOCK]
            self.blocks += 1
            self.block_tags += len({t for i in block for t in tags[i]})
            self.block_creators += len({int(self.creator_of[i]) for i in block})

    def report(self) -> dict[str, Any]:
        """The system's figures (rates are per video viewed)."""
        n = max(self.total, 1)
        videos = np.array([s[1] for s in self.sessions], dtype=np.float64)
        watch_s = np.array([s[2] for s in self.sessions], dtype=np.float64) / 1000.0
        rounds = np.array([s[0] for s in self.sessions], dtype=np.int64)
        by_round = [
            round(float(watch_s[rounds == r].mean()), 1) for r in range(int(rounds.max()) + 1)
        ] if len(rounds) else []  # fmt: skip
        per_creator = np.bincount(self.creator_of, weights=self.impressions, minlength=0)
        new = self.arrival_step >= 0
        shown_new = new & (self.impressions > 0)
        never = math.inf
        to_first_imps = np.where(shown_new, self.first_total - self.arrival_total, never)[new]
        to_first_steps = np.where(shown_new, self.first_step - self.arrival_step, never)[new]
        to_first_h = np.where(shown_new, (self.first_at - self.arrival_at) / 3600.0, never)[new]
        c = self.counts
        return {
            "sessions": len(self.sessions),
            "videos_viewed": self.total,
            "watch_s_mean": _r(watch_s.mean() if len(watch_s) else 0.0, 1),
            "watch_s_median": _r(np.median(watch_s) if len(watch_s) else 0.0, 1),
            # Half-width of a normal 95 % interval of the mean over sessions (sessions of
            # one viewer are not independent: read it as a lower bound of the noise).
            "watch_s_ci95": _r(
                1.96 * watch_s.std(ddof=1) / math.sqrt(len(watch_s)) if len(watch_s) > 1 else 0.0,
                1,
            ),
            "videos_mean": _r(videos.mean() if len(videos) else 0.0, 2),
            "videos_median": _r(np.median(videos) if len(videos) else 0.0, 1),
            "finish_rate": _r(c["finished"] / n, 4),
            "like_rate": _r(c["liked"] / n, 4),
            "share_rate": _r(c["shared"] / n, 4),
            "follow_rate": _r(c["followed"] / n, 4),
            "skip_rate": _r(c["skipped"] / n, 4),
            "not_interested_rate": _r(c["ni"] / n, 4),
            "taste_match": _r(self.match_sum / n, 4),
            "duration_s_mean": _r(self.duration_ms_sum / n / 1000.0, 1),
            "distinct_tags_per_10": _r(self.block_tags / self.blocks, 2) if self.blocks else None,
            "distinct_creators_per_10": _r(self.block_creators / self.blocks, 2)
            if self.blocks
            else None,
            "creator_gini": _r(gini(per_creator.tolist()), 4),
            "creator_coverage": _r(float((per_creator > 0).mean()), 4),
            "video_coverage": _r(float((self.impressions > 0).mean()), 4),
            "new_videos": int(new.sum()),
            "new_shown": _r(float(shown_new[new].mean()) if new.any() else 0.0, 4),
            f"new_reached_{self.discovery_impressions}": _r(
                float((self.impressions[new] >= self.discovery_impressions).mean())
                if new.any()
                else 0.0,
                4,
            ),
            "new_median_impressions_to_first": _median(to_first_imps),
            "new_median_sessions_to_first": _median(to_first_steps),
            "new_median_hours_to_first": _median(to_first_h),
            "watch_s_by_round": by_round,
            "simulated_hours": _r(self.span_s / 3600.0, 1),
        }


def _r(x: float, digits: int) -> float:
    return round(float(x), digits)


def _median(values: np.ndarray) -> float | None:
    """The median counting never-shown as infinite; None when over half never were."""
    if len(values) == 0:
        return None
    got = float(np.median(values))
    return round(got, 2) if math.isfinite(got) else None
