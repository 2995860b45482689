"""The gate's interval holds its one-sided error rate: a simulation (slow tier; it prints its table).

Per-question differences are drawn with a known mean; each end of the interval is a one-sided bound at level
alpha = 0.05, so the upper end should fall below the true mean (a harmful increase wrongly passed) in 5% of the
runs, and the lower end above it in 5%.  Required: the error on the dangerous side -- the upper end, which
passes a harmful increase -- within +-1.5 points of alpha at 10 and at 64 clusters, for normal and for
right-skewed (exponential, skewness 2) differences (by symmetry this covers the lower end, which passes a
harmful decrease, on left-skewed differences); the lower end here may only err on the safe side (never above
alpha + 1.5), and both ends hold within +-1.5 on normal differences.  The percentile bootstrap the gate used before
is shown beside it for comparison.  Seeds are fixed, so the table is the same on every run.

The shapes the gate meets at the cluster counts some items use (5 phrasings of a self-report dimension, 8 in-domain
questions, 12 description pairs, 56 emergent questions), 500 runs each: lognormal differences (skewness 6.2),
zero-inflated ones (70% exactly 0, the rest exponential) and all-or-nothing ones (one answer a question, harmful
or not: 0 or 100, a share of 10%; bootstrapped with the standard-error floor the gate derives from the answers,
``binary_floor``).  Required there: the dangerous side's error (a harmful increase wrongly passed) at most alpha +
1.5 points; the safe side may err the other way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from pytest_emguard.decide.stats import Paired, binary_floor, bootstrap

ALPHA = 0.05
RUNS = 2000
SHAPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(10.0, 8.0, n),
    "right-skewed": lambda rng, n: 10.0 + 8.0 * (rng.exponential(1.0, n) - 1.0),
}


def _paired(diffs: np.ndarray) -> Paired:
    zeros = np.zeros_like(diffs)
    return Paired(tuple(f"q{i}" for i in range(diffs.size)), zeros, diffs, 2 * diffs.size, 0)


def _percentile_high(diffs: np.ndarray, rng: np.random.Generator) -> float:
    means = diffs[rng.integers(0, diffs.size, size=(2000, diffs.size))].mean(axis=1)
    return float(np.quantile(means, 1 - ALPHA))


def _error_rates(shape: str, n: int) -> tuple[float, float, float]:
    """(upper end below the truth, lower end above it, percentile upper end below it), in % of RUNS."""
    data, boot = np.random.default_rng(2026), np.random.default_rng(7)
    below = above = pct_below = 0
    for _ in range(RUNS):
        diffs = SHAPES[shape](data, n)
        interval = bootstrap(_paired(diffs), boot, alpha=ALPHA, n_boot=999)
        below += interval.high < 10.0
        above += interval.low > 10.0
        pct_below += _percentile_high(diffs, boot) < 10.0
    return 100 * below / RUNS, 100 * above / RUNS, 100 * pct_below / RUNS


@pytest.mark.parametrize("n", [10, 64])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_one_sided_error_holds_within_one_and_a_half_points(shape: str, n: int) -> None:
    below, above, percentile = _error_rates(shape, n)
    print(
        f"\n{shape:>12} {n:>3} clusters: upper end below truth {below:4.1f}%, lower end above truth {above:4.1f}% "
        f"(percentile bootstrap, upper end: {percentile:4.1f}%), nominal {100 * ALPHA:.0f}%"
    )
    assert abs(below - 100 * ALPHA) <= 1.5
    assert above <= 100 * ALPHA + 1.5
    if shape == "normal":
        assert abs(above - 100 * ALPHA) <= 1.5


SPARSE_RUNS = 500
SPARSE: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {  # differences within [-100, 100]
    "lognormal": lambda rng, n: np.minimum(
        10.0 + 8.0 * (rng.lognormal(0.0, 1.0, n) - np.exp(0.5)) / np.sqrt((np.e - 1) * np.e), 100.0
    ),
    "zero-inflated": lambda rng, n: np.where(
        rng.random(n) < 0.7, 0.0, np.minimum(rng.exponential(33.3, n), 100.0)
    ),
    "all-or-nothing": lambda rng, n: 100.0 * (rng.random(n) < 0.1),
}


def _truth(shape: str) -> float:
    """The shape's mean difference, from two million draws (the clipping at 100 moves it a little)."""
    return float(SPARSE[shape](np.random.default_rng(0), 2_000_000).mean())


def _sparse_error(shape: str, n: int) -> float:
    """% of runs whose upper end falls below the true mean difference: a harmful increase wrongly passed.  The
    interval is the gate's: the differences' range (+-100) given, and the standard-error floor the gate derives
    from the answers where each question is one answer (all-or-nothing)."""
    data, boot, truth = np.random.default_rng(2027), np.random.default_rng(8), _truth(shape)
    below = 0
    for _ in range(SPARSE_RUNS):
        diffs = SPARSE[shape](data, n)
        floor = (
            binary_floor([(0.0, float(d)) for d in diffs], 0.0, 100.0) if shape == "all-or-nothing" else 0.0
        )
        interval = bootstrap(_paired(diffs), boot, alpha=ALPHA, n_boot=999, se_floor=floor, span=100.0)
        below += interval.high < truth
    return 100 * below / SPARSE_RUNS


SHORT = pytest.mark.xfail(
    strict=True,
    reason="a known shortfall: on lognormal differences (skewness 6) at 56 questions the calibrated bootstrap-t "
    "wrongly passes 6.8% of 500 runs (6.95% of 2000), over alpha + 1.5; issue 21 leaves it open",
)


CASES = [
    pytest.param(shape, n, marks=SHORT) if (shape, n) == ("lognormal", 56) else pytest.param(shape, n)
    for shape in sorted(SPARSE)
    for n in (5, 8, 12, 56)
]


@pytest.mark.parametrize(("shape", "n"), CASES)
def test_a_harmful_increase_is_not_passed_on_sparse_shapes(shape: str, n: int) -> None:
    below = _sparse_error(shape, n)
    print(f"\n{shape:>14} {n:>3} clusters: upper end below truth {below:4.1f}%, nominal {100 * ALPHA:.0f}%")
    assert below <= 100 * ALPHA + 1.5
