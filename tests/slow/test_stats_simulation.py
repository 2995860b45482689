"""The gate's interval holds its one-sided error rate: a simulation (slow tier; it prints its table).

Per-question differences are drawn with a known mean; each end of the interval is a one-sided bound at level
alpha = 0.05, so the upper end should fall below the true mean (a harmful increase wrongly passed) in 5% of the
runs, and the lower end above it in 5%.  Required: the error on the dangerous side -- the upper end, which
passes a harmful increase -- within +-1.5 points of alpha at 10 and at 64 clusters, for normal and for
right-skewed (exponential, skewness 2) differences (by symmetry this covers the lower end, which passes a
harmful decrease, on left-skewed differences); the lower end here may only err on the safe side (never above
alpha + 1.5), and both ends hold within +-1.5 on normal differences.  The percentile bootstrap the gate used before
is shown beside it for comparison.  Seeds are fixed, so the table is the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from pytest_emguard.decide.stats import Paired, bootstrap

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
