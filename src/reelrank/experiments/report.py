"""Per-arm results of an experiment, folded from the impression and event logs.

A user enters an experiment's results at their first impression logged with that
experiment's arm; from then on their impressions served under the experiment and their
events from that moment on count for that arm. Per user: watch time, impressions,
finishes, likes and sessions (a session ends after SESSION_GAP_S without an impression).
Per arm: watch time per user and session length (Welch's t-test between users), finish
and like rates per impression (a normal interval with delta-method variances over users),
each treatment against the control with a confidence interval, and the sample-ratio-
mismatch check on users per arm.

The fold is incremental: `Tracker` remembers how far it has read each log and reads only
what is new on the next report, so a report costs the new rows, not the whole log.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..schema import Event, EventType, Impression
from ..storage.base import Store
from . import stats
from .registry import CONTROL_KIND, Experiment

SESSION_GAP_S = 1800.0
READ_CHUNK = 5000
METRICS = ("watch_time_per_user_s", "session_length", "finish_rate", "like_rate")


@dataclass
class UserStats:
    arm: str
    first_ts: float
    impressions: int = 0
    sessions: int = 0
    last_ts: float = -math.inf
    watch_ms: int = 0
    finishes: int = 0
    likes: int = 0


class Fold:
    """One experiment's per-user figures."""

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        self.users: dict[str, UserStats] = {}

    def impression(self, imp: Impression) -> None:
        arm = (imp.arms or {}).get(self.experiment_id)
        if arm is None:
            return
        user = self.users.get(imp.user_id)
        if user is None:
            user = self.users[imp.user_id] = UserStats(arm, imp.ts)
        elif user.arm != arm:
            return  # the allocation changed under a running experiment; keep the first
        if imp.ts - user.last_ts > SESSION_GAP_S:
            user.sessions += 1
        user.last_ts = max(user.last_ts, imp.ts)
        user.impressions += 1

    def event(self, ev: Event) -> None:
        user = self.users.get(ev.user_id)
        if user is None or ev.ts < user.first_ts:
            return
        if ev.type is EventType.WATCH and ev.watch_ms is not None:
            user.watch_ms += ev.watch_ms
        elif ev.type is EventType.FINISH:
            user.finishes += 1
        elif ev.type is EventType.LIKE:
            user.likes += 1


def report(exp: Experiment, fold: Fold, level: float = 0.95) -> dict[str, Any]:
    """The experiment's description, per-arm metrics, comparisons and SRM check."""
    if not 0.5 <= level < 1:
        raise InvalidInput("level", f"must be in [0.5, 1), got {level}")
    names = [a.name for a in exp.spec.arms]
    by_arm: dict[str, list[UserStats]] = {n: [] for n in names}
    for user in fold.users.values():
        if user.arm in by_arm:
            by_arm[user.arm].append(user)
    arms: dict[str, dict[str, Any]] = {}
    for name, users in by_arm.items():
        imps = sum(u.impressions for u in users)
        arms[name] = {
            "users": len(users),
            "impressions": imps,
            "sessions": sum(u.sessions for u in users),
            "watch_time_per_user_s": _mean([u.watch_ms / 1000 for u in users]),
            "session_length": _mean([u.impressions / u.sessions for u in users if u.sessions]),
            "finish_rate": sum(u.finishes for u in users) / imps if imps else None,
            "like_rate": sum(u.likes for u in users) / imps if imps else None,
        }
    control = exp.spec.control
    base = by_arm[control]
    comparisons: dict[str, dict[str, Any]] = {}
    for name in names[1:]:
        other = by_arm[name]
        comparisons[name] = {
            "watch_time_per_user_s": _welch(
                [u.watch_ms / 1000 for u in base], [u.watch_ms / 1000 for u in other], level
            ),
            "session_length": _welch(
                [u.impressions / u.sessions for u in base if u.sessions],
                [u.impressions / u.sessions for u in other if u.sessions],
                level,
            ),
            "finish_rate": _rates(base, other, "finishes", level),
            "like_rate": _rates(base, other, "likes", level),
        }
    srm = stats.sample_ratio_mismatch(
        {n: len(u) for n, u in by_arm.items()}, exp.allocation.expected_shares()
    )
    return {
        "experiment": exp.describe(),
        "confidence_level": level,
        "session_gap_s": SESSION_GAP_S,
        "arms": arms,
        "comparisons": comparisons,
        "sample_ratio": {"expected": exp.allocation.expected_shares(), **srm},
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _welch(a: list[float], b: list[float], level: float) -> dict[str, Any] | None:
    if len(a) < 2 or len(b) < 2:
        return None  # not enough users yet
    return _summary(stats.welch(a, b, level), level)


def _rates(a: list[UserStats], b: list[UserStats], attr: str, level: float) -> Any:
    pa = [(min(getattr(u, attr), u.impressions), u.impressions) for u in a if u.impressions]
    pb = [(min(getattr(u, attr), u.impressions), u.impressions) for u in b if u.impressions]
    if len(pa) < 2 or len(pb) < 2:
        return None
    return _summary(stats.ratio(pa, pb, level), level)


def _summary(d: stats.Difference, level: float) -> dict[str, Any]:
    return {
        "control": d.control,
        "treatment": d.treatment,
        "delta": d.delta,
        "relative": d.relative,
        "ci_low": d.low,
        "ci_high": d.high,
        "p_value": d.p_value,
        "significant": d.p_value < 1 - level,
    }


class Tracker:
    """Folds the store's logs into every experiment's figures, reading only new rows."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.folds: dict[str, Fold] = {}
        self.impressions_read = 0
        self.events_read = 0

    def catch_up(self, experiment_ids: list[str]) -> None:
        with self.lock:
            for eid in experiment_ids:
                if eid not in self.folds:
                    self.folds[eid] = Fold(eid)
                    # a new fold must see the logs from the start
                    self.impressions_read = self.events_read = 0
                    for fold in self.folds.values():
                        fold.users.clear()
            folds = list(self.folds.values())
            while True:  # impressions first: events then find their users enrolled
                chunk = self.store.events.read_impressions(self.impressions_read, READ_CHUNK)
                for seq, imp in chunk:
                    if imp.arms:
                        for fold in folds:
                            fold.impression(imp)
                    self.impressions_read = seq
                if len(chunk) < READ_CHUNK:
                    break
            while True:
                got = self.store.events.read(self.events_read, READ_CHUNK)
                for offset, ev in got:
                    for fold in folds:
                        fold.event(ev)
                    self.events_read = offset
                if len(got) < READ_CHUNK:
                    break

    def report(self, exp: Experiment, level: float = 0.95) -> dict[str, Any]:
        self.catch_up([exp.spec.id])
        with self.lock:
            return report(exp, self.folds[exp.spec.id], level)


def format_report(rep: dict[str, Any]) -> str:
    """A readable summary of a report: per-arm figures, then each treatment's deltas."""
    exp = rep["experiment"]
    lines = [
        f"experiment {exp['id']} ({exp['status']}; layer {exp['layer']}, "
        f"{exp['traffic']:.0%} of users; control: {exp['control']})"
    ]
    head = f"{'arm':<16}{'users':>8}{'impr.':>9}{'watch s/user':>14}{'session':>9}"
    lines += [head + f"{'finish':>9}{'like':>9}"]

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    for name, a in rep["arms"].items():
        lines.append(
            f"{name:<16}{a['users']:>8}{a['impressions']:>9}"
            f"{num(a['watch_time_per_user_s'], '14.1f')}{num(a['session_length'], '9.2f')}"
            f"{num(a['finish_rate'], '9.3f')}{num(a['like_rate'], '9.3f')}"
        )
    level = rep["confidence_level"]
    for name, comp in rep["comparisons"].items():
        lines.append(f"{name} vs {exp['control']} ({level:.0%} intervals):")
        for metric in METRICS:
            d = comp.get(metric)
            if d is None:
                lines.append(f"  {metric:<22} not enough data")
                continue
            mark = " *" if d["significant"] else ""
            lines.append(
                f"  {metric:<22} {d['delta']:+.4g} [{d['ci_low']:+.4g}, {d['ci_high']:+.4g}] "
                f"p={d['p_value']:.3g}{mark}"
            )
    srm = rep["sample_ratio"]
    if srm.get("p_value") is None:
        lines.append("sample ratio: no users yet")
    else:
        verdict = "MISMATCH: do not trust these results" if srm["mismatch"] else "ok"
        lines.append(f"sample ratio: p={srm['p_value']:.3g} ({verdict})")
    return "\n".join(lines)


def book_from_store(settings: Any, store: Store) -> Any:
    """The experiments a server on these settings and this store runs (for the CLI)."""
    book = settings.experiment_book()
    stored = dict(store.catalog.iter_controls(CONTROL_KIND))
    for body in stored.values():
        book.restore(body)
    for eid, body in stored.items():
        if eid in book.experiments:
            book.experiments[eid].started_at = float(body.get("started_at", 0.0))
    return book
