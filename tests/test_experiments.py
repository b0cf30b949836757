"""A/B foundations (issue 6): deterministic, balanced, layered bucketing; the
significance computations against scipy; the sample-ratio-mismatch check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from reelrank.errors import InvalidInput
from reelrank.experiments.bucketing import BUCKETS, Allocation, Arm, bucket
from reelrank.experiments.stats import proportions, ratio, sample_ratio_mismatch, welch

USERS = [f"user-{i}" for i in range(100_000)]


def test_buckets_are_deterministic_and_in_range() -> None:
    first = [bucket("ranking", u) for u in USERS[:1000]]
    assert first == [bucket("ranking", u) for u in USERS[:1000]]
    assert all(0 <= b < BUCKETS for b in first)
    assert first != [bucket("recall", u) for u in USERS[:1000]]  # layers differ


def test_arms_are_balanced_within_sampling_tolerance() -> None:
    exp = Allocation("e1", "ranking", 0, BUCKETS, (Arm("control", 1), Arm("treatment", 1)))
    arms = [exp.arm_of(u) for u in USERS]
    share = arms.count("treatment") / len(arms)
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / len(arms))  # 4 standard errors
    weighted = Allocation("e2", "recall", 0, BUCKETS, (Arm("a", 9), Arm("b", 1)))
    share_b = [weighted.arm_of(u) for u in USERS].count("b") / len(USERS)
    assert abs(share_b - 0.1) < 4 * math.sqrt(0.09 / len(USERS))


def test_an_experiment_owns_only_its_share_of_the_layer() -> None:
    half = Allocation("e3", "policy", 0, BUCKETS // 2, (Arm("a", 1), Arm("b", 1)))
    other = Allocation("e4", "policy", BUCKETS // 2, BUCKETS // 2, (Arm("a", 1), Arm("b", 1)))
    sample = USERS[:20_000]
    inside = [half.arm_of(u) is not None for u in sample]
    assert abs(sum(inside) / len(sample) - 0.5) < 0.02
    # One layer: never in both experiments, always in one of them.
    assert all((half.arm_of(u) is None) != (other.arm_of(u) is None) for u in sample)


def test_layers_are_independent() -> None:
    a = Allocation("ea", "layer-a", 0, BUCKETS, (Arm("x", 1), Arm("y", 1)))
    b = Allocation("eb", "layer-b", 0, BUCKETS, (Arm("x", 1), Arm("y", 1)))
    table = np.zeros((2, 2))
    for u in USERS[:40_000]:
        table[a.arm_of(u) == "y", b.arm_of(u) == "y"] += 1
    assert sps.chi2_contingency(table).pvalue > 0.001


@pytest.mark.parametrize(
    ("start", "size", "arms"),
    [
        (0, 0, (Arm("a", 1), Arm("b", 1))),
        (9_000, 2_000, (Arm("a", 1), Arm("b", 1))),
        (0, 100, (Arm("a", 1),)),
        (0, 100, (Arm("a", 1), Arm("a", 2))),
        (0, 100, (Arm("a", 0), Arm("b", 1))),
    ],
)
def test_bad_allocations_are_refused(start: int, size: int, arms: tuple[Arm, ...]) -> None:
    with pytest.raises(InvalidInput):
        Allocation("bad", "l", start, size, arms)


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    control = rng.exponential(30.0, 400)
    treatment = rng.exponential(33.0, 350)
    got = welch(control.tolist(), treatment.tolist())
    ref = sps.ttest_ind(treatment, control, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got.low, got.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert got.delta == pytest.approx(treatment.mean() - control.mean())


def test_proportions_by_hand() -> None:
    got = proportions(300, 1000, 345, 1000)
    pa, pb = 0.3, 0.345
    se = math.sqrt(pa * (1 - pa) / 1000 + pb * (1 - pb) / 1000)
    assert got.delta == pytest.approx(0.045)
    assert got.low == pytest.approx(0.045 - 1.959964 * se, abs=1e-6)
    pooled = 645 / 2000
    z = 0.045 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert got.p_value == pytest.approx(2 * sps.norm.sf(z))
    assert got.relative == pytest.approx(0.15)


def test_sample_ratio_mismatch() -> None:
    expected = {"control": 0.5, "treatment": 0.5}
    fine = sample_ratio_mismatch({"control": 50_100, "treatment": 49_900}, expected)
    assert fine["mismatch"] is False
    ref = sps.chisquare([50_100, 49_900], [50_000, 50_000])
    assert fine["p_value"] == pytest.approx(ref.pvalue)
    broken = sample_ratio_mismatch({"control": 52_000, "treatment": 48_000}, expected)
    assert broken["mismatch"] is True
    assert sample_ratio_mismatch({}, expected)["p_value"] is None


def test_ratio_with_one_impression_per_user_is_the_unpooled_proportion_interval() -> None:
    rng = np.random.default_rng(3)
    a = [(float(x), 1.0) for x in rng.random(400) < 0.3]
    b = [(float(x), 1.0) for x in rng.random(500) < 0.4]
    got = ratio(a, b)
    ha, hb = int(sum(x for x, _ in a)), int(sum(x for x, _ in b))
    ref = proportions(ha, 400, hb, 500)
    assert got.delta == pytest.approx(ref.delta)
    # The delta method's sample variances use k - 1: the same interval up to that factor.
    half, ref_half = (got.high - got.low) / 2, (ref.high - ref.low) / 2
    pa, pb = ha / 400, hb / 500
    expected = 1.96 * math.sqrt(pa * (1 - pa) / 399 + pb * (1 - pb) / 499)
    assert half == pytest.approx(expected, rel=1e-3)
    assert half > ref_half


def test_ratio_widens_the_interval_when_users_differ() -> None:
    # Half the users finish everything, half nothing: per-impression trials are far from
    # independent, so the interval must be much wider than the binomial one.
    a = [(20.0, 20.0) if i % 2 else (0.0, 20.0) for i in range(40)]
    b = [(20.0, 20.0) if i % 3 else (0.0, 20.0) for i in range(40)]
    got = ratio(a, b)
    ref = proportions(int(sum(x for x, _ in a)), 800, int(sum(x for x, _ in b)), 800)
    assert got.delta == pytest.approx(ref.delta)
    assert (got.high - got.low) > 3 * (ref.high - ref.low)
    assert got.p_value > 0.01 > ref.p_value
    with pytest.raises(ValueError):
        ratio(a[:1], b)
