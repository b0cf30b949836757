"""The statistics of an A/B comparison: confidence intervals of differences and the
sample-ratio-mismatch check."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Difference:
    """Treatment minus control, with a two-sided confidence interval and p-value."""

    control: float
    treatment: float
    delta: float
    low: float
    high: float
    p_value: float

    @property
    def relative(self) -> float | None:
        return self.delta / self.control if self.control else None


def welch(control: Sequence[float], treatment: Sequence[float], level: float = 0.95) -> Difference:
    """Difference of means (per-user metrics such as watch time) by Welch's t-test."""
    a = [float(x) for x in control]
    b = [float(x) for x in treatment]
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each arm needs at least two users")
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se2 = va / len(a) + vb / len(b)
    delta = mb - ma
    if se2 == 0:
        return Difference(ma, mb, delta, delta, delta, 1.0 if delta == 0 else 0.0)
    se = math.sqrt(se2)
    dof = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    t = stats.t.ppf(0.5 + level / 2, dof)
    p = 2 * stats.t.sf(abs(delta) / se, dof)
    return Difference(ma, mb, delta, delta - t * se, delta + t * se, float(p))


def proportions(
    control_hits: int, control_n: int, treatment_hits: int, treatment_n: int, level: float = 0.95
) -> Difference:
    """Difference of rates (finish rate, like rate): normal interval, pooled z-test."""
    if control_n <= 0 or treatment_n <= 0:
        raise ValueError("each arm needs at least one trial")
    pa, pb = control_hits / control_n, treatment_hits / treatment_n
    delta = pb - pa
    z = stats.norm.ppf(0.5 + level / 2)
    se = math.sqrt(pa * (1 - pa) / control_n + pb * (1 - pb) / treatment_n)
    pooled = (control_hits + treatment_hits) / (control_n + treatment_n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / control_n + 1 / treatment_n))
    p = 2 * stats.norm.sf(abs(delta) / se0) if se0 > 0 else (1.0 if delta == 0 else 0.0)
    return Difference(pa, pb, delta, delta - z * se, delta + z * se, float(p))


def sample_ratio_mismatch(
    counts: dict[str, int], expected: dict[str, float], alpha: float = 0.001
) -> dict[str, object]:
    """Chi-square goodness of fit of users per arm against the configured shares: a tiny
    p-value means the assignment or logging is broken and the results cannot be trusted."""
    names = sorted(expected)
    observed = [counts.get(n, 0) for n in names]
    total = sum(observed)
    if total == 0:
        return {"p_value": None, "mismatch": False}
    share = sum(expected.values())
    wanted = [expected[n] / share * total for n in names]
    chi2, p = stats.chisquare(observed, wanted)
    return {"chi2": float(chi2), "p_value": float(p), "mismatch": bool(p < alpha)}


def _ratio_stats(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The ratio sum(x) / sum(n) of per-user (x, n) pairs and its variance by the delta
    method, which keeps the users' impressions together instead of treating each
    impression as independent."""
    k = len(pairs)
    mx = sum(p[0] for p in pairs) / k
    mn = sum(p[1] for p in pairs) / k
    r = mx / mn
    vx = sum((p[0] - mx) ** 2 for p in pairs) / (k - 1)
    vn = sum((p[1] - mn) ** 2 for p in pairs) / (k - 1)
    cov = sum((p[0] - mx) * (p[1] - mn) for p in pairs) / (k - 1)
    var = (vx - 2 * r * cov + r * r * vn) / (k * mn * mn)
    return r, max(var, 0.0)


def ratio(
    control: Sequence[tuple[float, float]],
    treatment: Sequence[tuple[float, float]],
    level: float = 0.95,
) -> Difference:
    """Difference of per-impression rates (finish rate, like rate) given per-user
    (events, impressions): a normal interval with delta-method variances, so users who
    see many videos are not counted as many independent trials."""
    if len(control) < 2 or len(treatment) < 2:
        raise ValueError("each arm needs at least two users")
    if sum(p[1] for p in control) <= 0 or sum(p[1] for p in treatment) <= 0:
        raise ValueError("each arm needs at least one impression")
    ra, va = _ratio_stats(control)
    rb, vb = _ratio_stats(treatment)
    delta = rb - ra
    se = math.sqrt(va + vb)
    z = stats.norm.ppf(0.5 + level / 2)
    if se == 0:
        return Difference(ra, rb, delta, delta, delta, 1.0 if delta == 0 else 0.0)
    p = 2 * stats.norm.sf(abs(delta) / se)
    return Difference(ra, rb, delta, delta - z * se, delta + z * se, float(p))
