"""Tests for the pure statistics layer: pairing, bootstrap, gate decision, correlation, chi-squared, and the agreement
of two judges (Cohen's kappa, Spearman's rank correlation)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_emguard.decide.association import average_ranks, chi2_association, cohen_kappa, pearson, spearman
from pytest_emguard.decide.stats import (
    Decision,
    Direction,
    Interval,
    Paired,
    bootstrap,
    decide,
    pair,
)

N_BOOT = 300
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
sample = st.one_of(st.none(), st.just(math.nan), finite)
side = st.dictionaries(st.sampled_from([f"q{i}" for i in range(8)]), st.lists(sample, max_size=5), max_size=8)
RANK = {"fail": 0, "inconclusive": 1, "pass": 2}


@st.composite
def paired_values(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """Equal-length base and tuned lists, one value per cluster, at least two clusters."""
    n = draw(st.integers(min_value=2, max_value=25))
    base = draw(st.lists(finite, min_size=n, max_size=n))
    tuned = draw(st.lists(finite, min_size=n, max_size=n))
    return base, tuned


@st.composite
def intervals(draw: st.DrawFn) -> Interval:
    """An arbitrary well-formed interval (low <= estimate <= high)."""
    a, b, c = sorted(draw(st.lists(finite, min_size=3, max_size=3)))
    n_clusters = draw(st.integers(min_value=1, max_value=200))
    return Interval(b, a, c, 0.9, n_clusters, draw(st.integers(min_value=n_clusters, max_value=2000)))


def _as_paired(base: list[float], tuned: list[float]) -> Paired:
    """Pair one-sample-per-cluster lists."""
    return pair({f"c{i}": [v] for i, v in enumerate(base)}, {f"c{i}": [v] for i, v in enumerate(tuned)})


def _interval(base: list[float], tuned: list[float], seed: int) -> Interval:
    """Bootstrap one-sample-per-cluster lists with a fixed seed."""
    return bootstrap(_as_paired(base, tuned), np.random.default_rng(seed), n_boot=N_BOOT)


def _close(a: float, b: float) -> bool:
    """Equality up to 1e-9, absolute or relative."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# --- hypothesis properties -------------------------------------------------------------------------


@given(paired_values(), st.integers(0, 2**32 - 1))
def test_interval_is_ordered_and_contains_estimate(
    values: tuple[list[float], list[float]], seed: int
) -> None:
    base, tuned = values
    interval = _interval(base, tuned, seed)
    assert interval.low <= interval.estimate <= interval.high
    assert interval.estimate == pytest.approx(float(np.mean(np.subtract(tuned, base))), abs=1e-9)
    assert interval.n_clusters == len(base)


@given(paired_values(), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_tiny_n_boot_still_contains_estimate(
    values: tuple[list[float], list[float]], n_boot: int, seed: int
) -> None:
    base, tuned = values
    interval = bootstrap(_as_paired(base, tuned), np.random.default_rng(seed), n_boot=n_boot)
    assert interval.low <= interval.estimate <= interval.high


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.25])
def test_uncalibrated_bootstrap_matches_reference_studentized_bounds(alpha: float) -> None:
    diffs = np.random.default_rng(7).normal(2.0, 3.0, size=25)
    paired = _as_paired([0.0] * 25, [float(v) for v in diffs])
    interval = bootstrap(paired, np.random.default_rng(11), alpha=alpha, n_boot=500, calibrate=0)
    d = paired.diffs
    draws = d[np.random.default_rng(11).integers(0, 25, size=(500, 25))]
    se = d.std(ddof=1) / 5.0
    t = (draws.mean(axis=1) - d.mean()) / (draws.std(axis=1, ddof=1) / 5.0)
    z = NormalDist().inv_cdf(1 - alpha)  # no bound nearer the estimate than the normal one
    assert interval.high == pytest.approx(
        d.mean() + max(-float(np.quantile(t, alpha, method="lower")), z) * se, abs=1e-12
    )
    assert interval.low == pytest.approx(
        d.mean() - max(float(np.quantile(t, 1 - alpha, method="higher")), z) * se, abs=1e-12
    )
    assert interval.confidence == pytest.approx(1 - 2 * alpha)
    with pytest.raises(ValueError):
        bootstrap(paired, np.random.default_rng(0), alpha=0.5)


@given(paired_values(), finite, st.integers(0, 2**32 - 1))
def test_shifting_tuned_shifts_interval(values: tuple[list[float], list[float]], c: float, seed: int) -> None:
    base, tuned = values
    before = _interval(base, tuned, seed)
    after = _interval(base, [t + c for t in tuned], seed)
    assert _close(after.estimate, before.estimate + c)
    assert _close(after.low, before.low + c)
    assert _close(after.high, before.high + c)


@given(paired_values(), st.integers(0, 2**32 - 1))
def test_swapping_sides_negates_estimate(values: tuple[list[float], list[float]], seed: int) -> None:
    base, tuned = values
    forward = _interval(base, tuned, seed)
    backward = _interval(tuned, base, seed)
    assert _close(backward.estimate, -forward.estimate)
    assert _close(backward.low, -forward.high)
    assert _close(backward.high, -forward.low)


@given(paired_values(), st.integers(0, 2**32 - 1))
def test_bootstrap_is_deterministic_for_a_seed(values: tuple[list[float], list[float]], seed: int) -> None:
    base, tuned = values
    assert _interval(base, tuned, seed) == _interval(base, tuned, seed)


def _valid(values: list[float | None]) -> list[float]:
    """Reference filter for valid samples."""
    return [v for v in values if v is not None and math.isfinite(v)]


@given(side, side, st.sampled_from(["mean", "max"]))
def test_pair_ignores_invalid_and_counts(
    base: dict[str, list[float | None]], tuned: dict[str, list[float | None]], reduce: str
) -> None:
    paired = pair(base, tuned, "mean" if reduce == "mean" else "max")
    every = set(base) | set(tuned)
    kept = sorted(c for c in every if _valid(base.get(c, [])) and _valid(tuned.get(c, [])))
    assert paired.clusters == tuple(kept)
    assert paired.n_dropped == len(every) - len(kept)
    assert paired.n_samples == sum(len(_valid(base[c])) + len(_valid(tuned[c])) for c in kept)
    fn = np.mean if reduce == "mean" else np.max
    for i, cluster in enumerate(kept):
        assert paired.base[i] == pytest.approx(float(fn(_valid(base[cluster]))), abs=1e-9)
        assert paired.tuned[i] == pytest.approx(float(fn(_valid(tuned[cluster]))), abs=1e-9)
    assert np.all(np.isfinite(paired.diffs))


@given(st.lists(st.lists(finite, min_size=2, max_size=5), min_size=1, max_size=6))
def test_reduce_max_uses_max_and_mean_uses_mean(samples: list[list[float]]) -> None:
    base = {f"q{i}": [0.0] for i in range(len(samples))}
    tuned: dict[str, list[float | None]] = {f"q{i}": list(v) for i, v in enumerate(samples)}
    by_max = pair(base, tuned, reduce="max")
    by_mean = pair(base, tuned, reduce="mean")
    assert by_max.tuned.tolist() == [max(v) for v in samples]
    assert by_mean.tuned.tolist() == pytest.approx([sum(v) / len(v) for v in samples], abs=1e-9)


@given(intervals(), st.floats(0, 1e3), st.floats(0, 1e3), st.sampled_from(["increase", "decrease"]))
def test_decide_is_monotone_in_threshold(interval: Interval, t1: float, t2: float, direction: str) -> None:
    lo, hi = sorted((t1, t2))
    d: Direction = "increase" if direction == "increase" else "decrease"
    strict = decide(interval, lo, d, min_clusters=1)
    lenient = decide(interval, hi, d, min_clusters=1)
    assert RANK[strict.outcome] <= RANK[lenient.outcome]


@given(intervals(), st.floats(0, 1e3))
def test_decide_matches_the_rule(interval: Interval, threshold: float) -> None:
    up = decide(interval, threshold, "increase", min_clusters=1).outcome
    down = decide(interval, threshold, "decrease", min_clusters=1).outcome
    assert up == (
        "fail" if interval.low > threshold else "pass" if interval.high <= threshold else "inconclusive"
    )
    assert down == (
        "fail" if interval.high < -threshold else "pass" if interval.low >= -threshold else "inconclusive"
    )


# --- concrete examples -----------------------------------------------------------------------------


Scores = dict[str, list[float | None]]


def _noisy(rng: np.random.Generator, shift: float, n_clusters: int, per: int = 4) -> tuple[Scores, Scores]:
    """Base and tuned scores with a true per-cluster shift and sd-5 sample noise."""
    centres = rng.uniform(20, 60, size=n_clusters)
    base: Scores = {f"q{i}": [float(v) for v in c + rng.normal(0, 5, per)] for i, c in enumerate(centres)}
    tuned: Scores = {
        f"q{i}": [float(v) for v in c + shift + rng.normal(0, 5, per)] for i, c in enumerate(centres)
    }
    return base, tuned


def test_clear_shift_fails() -> None:
    rng = np.random.default_rng(1)
    base, tuned = _noisy(rng, 30.0, 40)
    interval = bootstrap(pair(base, tuned), rng)
    decision = decide(interval, 10.0, "increase", min_clusters=20)
    assert decision.outcome == "fail"
    assert 25.0 < interval.estimate < 35.0
    assert interval.low > 10.0
    assert interval.confidence == pytest.approx(0.9)
    assert interval.n_samples == 40 * 4 * 2


def test_clear_decrease_fails_only_in_decrease_direction() -> None:
    rng = np.random.default_rng(2)
    base, tuned = _noisy(rng, -30.0, 40)
    interval = bootstrap(pair(base, tuned), rng)
    assert decide(interval, 10.0, "decrease", min_clusters=20).outcome == "fail"
    assert decide(interval, 10.0, "increase", min_clusters=20).outcome == "pass"


def test_identical_passes() -> None:
    rng = np.random.default_rng(3)
    base, _ = _noisy(rng, 0.0, 40)
    interval = bootstrap(pair(base, base), rng)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    decision = decide(interval, 10.0, "increase", min_clusters=20)
    assert decision == Decision("pass", decision.reason)
    assert "90%" in decision.reason


def test_too_few_clusters_is_inconclusive() -> None:
    rng = np.random.default_rng(4)
    base, tuned = _noisy(rng, 30.0, 3)
    interval = bootstrap(pair(base, tuned), rng)
    decision = decide(interval, 10.0, "increase", min_clusters=20)
    assert decision.outcome == "inconclusive"
    assert "3" in decision.reason and "20" in decision.reason
    assert "more answers cannot make up for questions" in decision.reason


def test_straddling_is_inconclusive_and_says_so() -> None:
    rng = np.random.default_rng(5)
    base, tuned = _noisy(rng, 10.0, 30)
    interval = bootstrap(pair(base, tuned), rng)
    assert interval.low < 10.0 < interval.high
    decision = decide(interval, 10.0, "increase", min_clusters=20)
    assert decision.outcome == "inconclusive"
    assert decision.reason.endswith("straddles the threshold +10")


def test_estimate_on_threshold_says_so() -> None:
    interval = Interval(estimate=10.0, low=5.0, high=15.0, confidence=0.9, n_clusters=30, n_samples=60)
    decision = decide(interval, 10.0, "increase", min_clusters=20)
    assert decision.outcome == "inconclusive"
    assert "sits on the threshold" in decision.reason


def test_bootstrap_edge_cases() -> None:
    with pytest.raises(ValueError):
        bootstrap(pair({}, {}), np.random.default_rng(0))
    one = bootstrap(pair({"q": [1.0, 3.0]}, {"q": [7.0]}), np.random.default_rng(0))
    assert (one.estimate, one.low, one.high, one.n_clusters, one.n_samples) == (5.0, 5.0, 5.0, 1, 3)


def test_pair_drops_one_sided_and_empty_clusters() -> None:
    paired = pair({"a": [1.0, None], "b": [None], "c": [2.0]}, {"a": [math.nan, 4.0], "b": [1.0], "d": [5.0]})
    assert paired.clusters == ("a",)
    assert paired.n_dropped == 3
    assert paired.n_samples == 2
    assert paired.diffs.tolist() == [3.0]


def test_pearson() -> None:
    assert pearson([1, 2, 3, 4], [3, 5, 7, 9]) == pytest.approx(1.0, abs=1e-12)
    assert pearson([1, 2, 3, 4], [9, 7, 5, 3]) == pytest.approx(-1.0, abs=1e-12)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2], [1, 2]) is None
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([0.1, 0.1, 0.1], [1, 2, 3]) is None


def test_chi2_known_table() -> None:
    table = [[10, 20], [30, 40]]
    # By hand: n (ad - bc)^2 / (r1 r2 c1 c2) = 100 * 200^2 / (30 * 70 * 40 * 60) = 0.79365...
    by_hand = 100 * (10 * 40 - 20 * 30) ** 2 / (30 * 70 * 40 * 60)
    result = chi2_association(table)
    assert result is not None
    statistic, p = result
    assert statistic == pytest.approx(by_hand, rel=1e-12)
    assert statistic == pytest.approx(0.7937, abs=1e-4)
    assert p == pytest.approx(0.3730, abs=1e-4)


def test_chi2_degenerate_and_strong() -> None:
    assert chi2_association([[0, 0], [3, 4]]) is None
    assert chi2_association([[5, 0], [7, 0]]) is None
    result = chi2_association([[50, 0], [0, 50]])
    assert result is not None
    assert result[0] == pytest.approx(100.0)
    assert result[1] < 1e-20


@settings(max_examples=50)
@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 200), st.integers(0, 200))
def test_chi2_p_is_a_probability_and_matches_closed_form(a: int, b: int, c: int, d: int) -> None:
    result = chi2_association([[a, b], [c, d]])
    margins = (a + b, c + d, a + c, b + d)
    if min(margins) == 0:
        assert result is None
        return
    assert result is not None
    n = a + b + c + d
    assert result[0] == pytest.approx(n * (a * d - b * c) ** 2 / math.prod(margins), rel=1e-9, abs=1e-12)
    assert 0.0 <= result[1] <= 1.0


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=7), st.data())
def test_expected_max_matches_brute_force(values: list[float], data: st.DataObject) -> None:
    import itertools

    from pytest_emguard.decide.stats import expected_max

    k = data.draw(st.integers(1, len(values)))
    subsets = list(itertools.combinations(values, k))
    assert expected_max(values, k) == pytest.approx(sum(max(s) for s in subsets) / len(subsets), abs=1e-9)


def test_expected_max_compares_equal_k() -> None:
    """Two sides drawn from one distribution, 5 against 10 valid answers: a plain max reads the bigger sample
    higher; the expected max at equal k does not."""
    rng = np.random.default_rng(3)
    base = {f"q{i}": [float(v) for v in rng.uniform(0, 100, 5)] for i in range(400)}
    tuned = {f"q{i}": [float(v) for v in rng.uniform(0, 100, 10)] for i in range(400)}
    plain = pair(base, tuned, "max")
    fair = pair(base, tuned, "expected_max")
    assert float(plain.diffs.mean()) > 8.0
    assert abs(float(fair.diffs.mean())) < 2.0


# --- judge agreement: Cohen's kappa and Spearman ----------------------------------------------------


def _table(both: int, first_only: int, second_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Two raters' yes/no labels laid out from a 2x2 table."""
    first = [True] * both + [True] * first_only + [False] * second_only + [False] * neither
    second = [True] * both + [False] * first_only + [True] * second_only + [False] * neither
    return first, second


@pytest.mark.parametrize(
    ("table", "by_hand"),
    [
        # p_o = 35/50 = 0.7; yes shares 25/50 and 30/50: p_e = 0.5*0.6 + 0.5*0.4 = 0.5; (0.7-0.5)/(1-0.5)
        ((20, 5, 10, 15), 0.4),
        # p_o = 0.6; yes shares 0.6 and 0.7: p_e = 0.42 + 0.12 = 0.54; 0.06/0.46
        ((45, 15, 25, 15), 3 / 23),
        # p_o = 0.6; yes shares 0.6 and 0.3: p_e = 0.18 + 0.28 = 0.46; 0.14/0.54
        ((25, 35, 5, 35), 7 / 27),
        ((10, 0, 0, 10), 1.0),  # every item alike, both classes used
        ((0, 10, 10, 0), -1.0),  # every item apart, balanced
        ((0, 4, 0, 6), 0.0),  # the second rater says no to all: p_o = p_e = 0.6
    ],
)
def test_cohen_kappa_matches_hand_computed_tables(table: tuple[int, int, int, int], by_hand: float) -> None:
    assert cohen_kappa(*_table(*table)) == pytest.approx(by_hand, abs=1e-12)


def test_cohen_kappa_on_three_classes_and_where_it_has_no_value() -> None:
    # p_o = 3/6; each rater uses each class 2 of 6 times: p_e = 3 * (1/3)^2 = 1/3; (1/2 - 1/3) / (2/3) = 1/4
    assert cohen_kappa(["a", "b", "c", "a", "b", "c"], ["a", "b", "c", "b", "c", "a"]) == pytest.approx(0.25)
    assert cohen_kappa([True] * 5, [True] * 5) is None  # both give one and the same class: chance is certain
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError, match="differ in length"):
        cohen_kappa([True], [True, False])


def test_average_ranks_share_ties() -> None:
    assert average_ranks([3, 1, 3, 2, 3]).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks([]).tolist() == []
    assert average_ranks([7.5]).tolist() == [1.0]


def test_spearman_by_hand_with_ties() -> None:
    # ranks of y: 5 -> 1, 6 -> 2, the two 7s -> 3.5, 8 -> 5; deviations from the mean rank 3: x (-2, -1, 0, 1, 2),
    # y (-2, -1, 0.5, 2, 0.5): r = 8 / sqrt(10 * 9.5)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # any increasing function
    assert spearman([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [2, 1]) is None  # fewer than 3 points
    assert spearman([1, 2, 3], [5, 5, 5]) is None  # a constant side has no ranks to correlate
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2, 3], [1, 2])


small_ints = st.lists(st.integers(0, 6), min_size=3, max_size=30)


@settings(max_examples=60)
@given(st.data())
def test_spearman_matches_scipy_with_many_ties(data: st.DataObject) -> None:
    stats = pytest.importorskip("scipy.stats")
    x = data.draw(small_ints)
    y = data.draw(st.lists(st.integers(0, 6), min_size=len(x), max_size=len(x)))
    ours = spearman(x, y)
    if len(set(x)) == 1 or len(set(y)) == 1:
        assert ours is None
        return
    assert ours == pytest.approx(float(stats.spearmanr(x, y)[0]), abs=1e-9)


@settings(max_examples=60)
@given(small_ints, st.data())
def test_cohen_kappa_matches_sklearn_and_is_symmetric(x: list[int], data: st.DataObject) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    y = data.draw(st.lists(st.integers(0, 6), min_size=len(x), max_size=len(x)))
    ours, swapped = cohen_kappa(x, y), cohen_kappa(y, x)
    assert (ours is None) == (swapped is None)
    if ours is None:
        assert set(x) == set(y) and len(set(x)) == 1
        return
    assert ours == pytest.approx(float(metrics.cohen_kappa_score(x, y)), abs=1e-9)
    assert swapped == pytest.approx(ours, abs=1e-12)
