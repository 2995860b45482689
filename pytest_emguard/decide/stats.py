"""Pure statistics for gating a fine-tuned model against its base model.

Scores arrive per *cluster* (one question) with several samples per side. Clusters are paired,
reduced to one value per side, and the mean per-cluster difference ``tuned - base`` is given a
question-clustered bootstrap interval. :func:`decide` turns that interval into pass, fail or
inconclusive against an allowed change. Everything here is a pure function; all randomness comes
from an explicit :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pytest_emguard.types import Direction, Outcome, Reduce

__all__ = [
    "Decision",
    "Direction",
    "Interval",
    "Outcome",
    "Paired",
    "Reduce",
    "betting_interval",
    "binary_floor",
    "bootstrap",
    "decide",
    "expected_max",
    "pair",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Paired:
    """Per-cluster reduced values for the clusters both sides could score.

    ``clusters`` is sorted; ``base`` and ``tuned`` follow the same order. ``n_samples`` counts the
    valid values of the kept clusters, both sides together; ``n_dropped`` counts clusters where a
    side had no valid value (including clusters present on one side only).
    """

    clusters: tuple[str, ...]
    base: FloatArray
    tuned: FloatArray
    n_samples: int
    n_dropped: int

    @property
    def diffs(self) -> FloatArray:
        """Per-cluster differences ``tuned - base``."""
        return self.tuned - self.base


@dataclass(frozen=True, slots=True)
class Interval:
    """A bootstrap interval for the mean per-cluster difference ``tuned - base``."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_clusters: int
    n_samples: int
    kind: str = "interval"  # or "group-sequential interval (look k of K)" (--em-sequential; sequential.py)


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate verdict and a one-sentence reason (what would settle an inconclusive item is the gate's, from
    the item's design variance: ``sizing.settle``)."""

    outcome: Outcome
    reason: str


def _valid(values: Sequence[float | None]) -> list[float]:
    """Return the finite values of ``values``, dropping ``None``, NaN and infinities."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _reduce(values: list[float], reduce: Reduce, k: int) -> float:
    """Reduce a non-empty list of valid values by its mean, its max, or the expected max of ``k`` draws."""
    if reduce == "mean":
        return math.fsum(values) / len(values)
    if reduce == "max":
        return max(values)
    if reduce == "expected_max":
        return expected_max(values, k)
    raise ValueError(f"reduce must be 'mean', 'max' or 'expected_max', got {reduce!r}")


def expected_max(values: Sequence[float], k: int) -> float:
    """The expected maximum of ``k`` draws without replacement from ``values`` (order statistics): with the
    values sorted, the i-th smallest (1-based) is the maximum with probability C(i-1, k-1) / C(m, k)."""
    m = len(values)
    if not 1 <= k <= m:
        raise ValueError(f"k must lie in [1, {m}], got {k}")
    ordered = sorted(values)
    total = math.comb(m, k)
    return math.fsum(ordered[i - 1] * math.comb(i - 1, k - 1) for i in range(k, m + 1)) / total


def _frozen(values: list[float]) -> FloatArray:
    """Build a read-only float64 array, so a frozen dataclass stays effectively immutable."""
    array = np.asarray(values, dtype=np.float64)
    array.setflags(write=False)
    return array


def pair(
    base: Mapping[str, Sequence[float | None]],
    tuned: Mapping[str, Sequence[float | None]],
    reduce: Reduce = "mean",
) -> Paired:
    """Pair base and tuned samples by cluster and reduce each side to one value per cluster.

    ``None`` and non-finite values are invalid samples and are ignored. A cluster is kept only when
    both sides have at least one valid value; every other cluster seen on either side is dropped.
    """
    if reduce not in ("mean", "max", "expected_max"):
        raise ValueError(f"reduce must be 'mean', 'max' or 'expected_max', got {reduce!r}")
    kept: list[str] = []
    base_values: list[float] = []
    tuned_values: list[float] = []
    n_samples = 0
    every = sorted(set(base) | set(tuned))
    for cluster in every:
        b = _valid(base.get(cluster, ()))
        t = _valid(tuned.get(cluster, ()))
        if not b or not t:
            continue
        kept.append(cluster)
        k = min(
            len(b), len(t)
        )  # expected_max: both sides at the same k, so unequal valid counts do not bias it
        base_values.append(_reduce(b, reduce, k))
        tuned_values.append(_reduce(t, reduce, k))
        n_samples += len(b) + len(t)
    return Paired(
        clusters=tuple(kept),
        base=_frozen(base_values),
        tuned=_frozen(tuned_values),
        n_samples=n_samples,
        n_dropped=len(every) - len(kept),
    )


FEW_CLUSTERS = 30  # below this many questions a bounded metric's interval also covers the betting interval
RESAMPLE_FLOOR = 0.1  # a resampled standard error counts as at least this share of the observed one
GRID = (0.25, 1.0)  # calibrated levels range from alpha / 4 to alpha: calibration only ever tightens a bound
CALIBRATION_INNER = 100  # inner resamples per outer resample when the bootstrap-t level is calibrated


def bootstrap(
    paired: Paired,
    rng: np.random.Generator,
    *,
    alpha: float = 0.05,
    n_boot: int = 2000,
    calibrate: int = 200,
    se_floor: float = 0.0,
    span: float | None = None,
) -> Interval:
    """Question-clustered paired interval for the mean of ``paired.diffs``: a calibrated studentized bootstrap.

    Each end is a one-sided bound at level ``alpha`` (the two-sided confidence is ``1 - 2 * alpha``).  The
    studentized bootstrap (bootstrap-t) resamples clusters and reads the bound from the distribution of
    ``(mean* - mean) / se*``, which follows the skew of the data where the percentile interval does not (on
    right-skewed differences the percentile bound wrongly passes 12-17% of the time at 10 clusters against a
    nominal 5%).  At few clusters the bootstrap-t still errs, so the level of each end is calibrated by a double
    bootstrap (Hall's iterated bootstrap): ``calibrate`` outer resamples, each with ``CALIBRATION_INNER`` inner
    ones, estimate the real error of each nominal level, and each end uses the level whose estimated error is
    ``alpha``.  ``calibrate=0`` turns calibration off.  ``tests/slow/test_stats_simulation.py`` measures the error.

    Where the data are sparse the resampled standard errors collapse (a resample of zeros has none) and the
    studentized values run to infinity, so three rules keep the interval honest:

    - ``se_floor``: no standard error, observed or resampled, is taken below it (the gate passes the standard
      error the answers' own binomial noise implies for a rate, ``binary_floor``), and no resampled one below
      ``RESAMPLE_FLOOR`` times the observed one: a resample that repeats one value has no spread, and its
      studentized value would be infinite (so would the bound: [-inf, 5.0] on 30 self-ratings that rose by 3 or
      5 points each); the floor is low enough to keep the large values that correct for skew;
    - each bound lies at least ``z_{1-alpha}`` standard errors from the estimate (a degenerate bootstrap
      distribution, e.g. every difference zero, cannot give a zero-width interval where the floor says there is
      noise);
    - no clamp to the range of the differences: a resampled mean stays within it, the population mean need not;
    - with fewer than ``FEW_CLUSTERS`` questions and differences known to lie within ``[-span, span]`` (a bounded
      metric), the interval also covers the fixed-n betting interval (``betting_interval`` with ``fixed_n``), which holds at any sample size: measured, the bootstrap alone wrongly passed 10-22% of
      lognormal and zero-inflated cases at 5-12 questions (``tests/slow/test_stats_simulation.py``).

    With zero spread and no floor the interval is the estimate itself.
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    diffs = paired.diffs
    n = int(diffs.size)
    if n == 0:
        raise ValueError("cannot bootstrap with no paired clusters")
    if se_floor < 0.0 or not math.isfinite(se_floor):
        raise ValueError(f"se_floor must be a finite number >= 0, got {se_floor}")
    estimate = float(np.mean(diffs))
    centred = diffs - estimate  # computed on centred values, so shifting every difference shifts the interval
    se = max(float(np.std(centred, ddof=1)) / math.sqrt(n) if n > 1 else 0.0, se_floor)
    low = high = estimate
    if se > 0.0:
        from statistics import NormalDist

        floor = max(
            se_floor, RESAMPLE_FLOOR * se
        )  # a resample without spread: a large t, not an infinite one
        t = _studentized(centred[rng.integers(0, n, size=(n_boot, n))], float(centred.mean()), floor)
        lo_level, hi_level = (
            _calibrated_levels(centred, rng, alpha, calibrate, floor) if calibrate else (alpha, alpha)
        )
        z = NormalDist().inv_cdf(1.0 - alpha)
        high = estimate + max(-float(np.quantile(t, hi_level, method="lower")), z) * se
        low = estimate - max(float(np.quantile(t, 1.0 - lo_level, method="higher")), z) * se
    if span is not None and n < FEW_CLUSTERS:
        bet = betting_interval(diffs.tolist(), span, alpha, fixed_n=True)
        low, high = min(low, bet.low), max(high, bet.high)
    return Interval(
        estimate=estimate,
        low=low,
        high=high,
        confidence=1.0 - 2.0 * alpha,
        n_clusters=n,
        n_samples=paired.n_samples,
    )


def _studentized(resamples: FloatArray, centre: FloatArray | float, se_floor: float = 0.0) -> FloatArray:
    """``(mean* - centre) / max(se*, se_floor)`` over the last axis; a resample with no spread (and no floor)
    counts as 0 when it sits on the centre and as +-inf otherwise."""
    n = resamples.shape[-1]
    means = resamples.mean(axis=-1)
    ses = resamples.std(axis=-1, ddof=1) / math.sqrt(n)
    ses = np.where(ses > 1e-12 * (float(np.abs(resamples).max()) + 1e-300), ses, 0.0)
    ses = np.maximum(ses, se_floor)
    gap = means - centre
    tiny = 1e-9 * (
        float(np.abs(resamples).max()) + float(np.abs(centre).max()) + 1e-300
    )  # rounding, not a gap
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = np.where(np.abs(gap) <= tiny, 0.0, np.copysign(np.inf, gap))
        t = np.where(ses > 0, gap / np.where(ses > 0, ses, 1.0), flat)
    return np.asarray(t, dtype=np.float64)


def _calibrated_levels(
    diffs: FloatArray, rng: np.random.Generator, alpha: float, outer: int, se_floor: float = 0.0
) -> tuple[float, float]:
    """(lower-end level, upper-end level): for each end, the nominal level whose bound, computed on each outer
    resample from its inner resamples, misses the sample mean in ``alpha`` of the outer resamples.  Levels above
    ``alpha`` are never chosen: at few clusters the double bootstrap itself underestimates the error (measured:
    allowing up to 2 alpha let 7.5% of right-skewed runs at 10 clusters wrongly pass), and a calibrated bound
    must not be looser than the plain one.  The price: on normal differences at 64 clusters the bounds are
    slightly conservative (3.5% instead of 5%)."""
    n = diffs.size
    grid = np.linspace(alpha * GRID[0], alpha * GRID[1], 31)
    centre = float(diffs.mean())
    samples = diffs[rng.integers(0, n, size=(outer, n))]
    means = samples.mean(axis=1)
    ses = np.maximum(samples.std(axis=1, ddof=1) / math.sqrt(n), se_floor)
    inner = np.take_along_axis(
        np.repeat(samples[:, None, :], CALIBRATION_INNER, axis=1),
        rng.integers(0, n, size=(outer, CALIBRATION_INNER, n)),
        axis=2,
    )
    t = _studentized(inner, means[:, None], se_floor)  # outer x inner
    tiny = 1e-9 * (
        float(np.abs(diffs).max()) + 1e-300
    )  # a bound that equals the mean up to rounding holds it
    spread = ses > 0
    with np.errstate(invalid="ignore"):
        q_up = np.quantile(t, grid, axis=1, method="lower")  # grid x outer
        q_lo = np.quantile(t, 1.0 - grid, axis=1, method="higher")
        upper = np.where(spread, means[None, :] - q_up * np.where(spread, ses, 0.0)[None, :], means[None, :])
        lower = np.where(spread, means[None, :] - q_lo * np.where(spread, ses, 0.0)[None, :], means[None, :])
    return _level_for(grid, (lower > centre + tiny).mean(axis=1), alpha), _level_for(
        grid, (upper < centre - tiny).mean(axis=1), alpha
    )


def _level_for(grid: FloatArray, missed: FloatArray, alpha: float) -> float:
    """The nominal level whose real error is alpha, from the measured error at each grid level: the error grows
    in proportion to the level (zero at zero), so one factor fitted over the whole grid (least squares through
    the origin) steadies a curve measured on a few hundred resamples."""
    slope = float(grid @ missed) / float(grid @ grid)
    if slope <= 0.0:
        return float(grid[-1])
    return float(np.clip(alpha / slope, grid[0], grid[-1]))


def binary_floor(pairs: Sequence[tuple[float, float]], low: float, high: float, alpha: float = 0.05) -> float:
    """The standard error of a paired difference of two rates implied by the answers' own noise, for values that
    only take the two bounds ``low`` and ``high`` (a share of answers, in points).  ``pairs`` are the (base,
    fine-tune) values of answers drawn with the same seed.  A paired difference is 0 or +-span, so its variance
    is at most span^2 times the share of discordant pairs; the share is taken at its Wilson upper bound at
    ``alpha`` (not the observed share, which is small exactly where the interval would be too narrow): where no
    pair differs the bound ``z`` standard errors out is about ``z^2 / m``, near the exact binomial bound for
    zero events, ``ln(1/alpha) / m``.  So 30 answers a side that never differ rule out no 5-point rise (8.6),
    64 identical ones rule out a 5-point rise (4.1), and 640 a 0.5-point one.  With independent sides the
    discordant share is about the sum of the two binomial variances, so the floor matches the unpaired one.  0
    where a value lies between the bounds (not a rate) or there is no pair."""
    from statistics import NormalDist

    span = high - low
    if span <= 0 or not pairs:
        return 0.0
    if any(v not in (low, high) for pair in pairs for v in pair):
        return 0.0
    m = len(pairs)
    z = NormalDist().inv_cdf(1.0 - alpha)
    share = sum(b != t for b, t in pairs) / m
    upper = (share + z * z / (2 * m) + z * math.sqrt(share * (1 - share) / m + z * z / (4 * m * m))) / (
        1 + z * z / m
    )
    return span * math.sqrt(min(upper, 1.0) / m)


LAMBDA_MAX = 0.75  # the bet size cap of the PrPl-EB bound (the paper's c: 1/2 or 3/4; 3/4 settles a zero
# difference sooner: +-12.5 points of a 0-100 score at 64 questions in sequence, against +-18.7)


def betting_interval(diffs: Sequence[float], span: float, alpha: float, *, fixed_n: bool = False) -> Interval:
    """The predictable plug-in empirical-Bernstein bound of Waudby-Smith and Ramdas (JRSS-B 2024, Theorem 2) for
    the mean of ``diffs``.  By default the confidence sequence after ``diffs`` (per-question differences in the
    order asked, each within ``[-span, span]``): each end holds at every round at once with probability at least
    1 - ``alpha``.

    ``fixed_n``: the same bet read once, at ``n`` (the paper's PrPl-EB confidence interval: each bet sized for
    ``n`` values rather than for every round), valid at ``n`` only and narrower; the gate takes it beside the
    bootstrap where the questions are few (``bootstrap``'s ``span``)."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no differences to bound")
    if not math.isfinite(span) or span <= 0:
        raise ValueError(f"span must be a positive number, got {span}")
    x = (np.asarray(diffs, dtype=np.float64) + span) / (2 * span)  # into [0, 1]
    if np.any(x < -1e-9) or np.any(x > 1 + 1e-9):
        raise ValueError(f"a difference lies outside [-{span}, {span}]")
    x = np.clip(x, 0.0, 1.0)
    i = np.arange(1, n + 1, dtype=np.float64)
    mu_hat = (0.5 + np.cumsum(x)) / (i + 1)  # mu_hat_t, the regularised running mean
    var_hat = (0.25 + np.cumsum((x - mu_hat) ** 2)) / (i + 1)
    prev_var = np.concatenate(([0.25], var_hat[:-1]))  # predictable: the estimates before each value
    prev_mu = np.concatenate(([0.5], mu_hat[:-1]))
    log_term = math.log(1.0 / alpha)  # one end at level alpha
    horizon = np.full_like(i, float(n)) if fixed_n else i * np.log1p(i)
    lam = np.minimum(np.sqrt(2 * log_term / (prev_var * horizon)), LAMBDA_MAX)
    v = 4 * (x - prev_mu) ** 2
    psi = (-np.log1p(-lam) - lam) / 4
    centre = float(np.sum(lam * x) / np.sum(lam))
    margin = float((log_term + np.sum(v * psi)) / np.sum(lam))
    low, high = max(0.0, centre - margin), min(1.0, centre + margin)
    mean = float(np.mean(diffs))
    kind = "interval" if fixed_n else "confidence sequence"
    return Interval(mean, low * 2 * span - span, high * 2 * span - span, 1 - 2 * alpha, n, n, kind)


def _num(value: float) -> str:
    """Format a number for a human reason string."""
    return f"{value:.4g}"


def _too_few(interval: Interval, min_clusters: int) -> Decision:
    """Inconclusive decision for an interval built from fewer clusters than required."""
    reason = (
        f"only {interval.n_clusters} question(s) could be paired, fewer than the {min_clusters} required "
        "(more answers cannot make up for questions)"
    )
    return Decision("inconclusive", reason)


def _straddles(interval: Interval, boundary: float, span: str) -> Decision:
    """Inconclusive decision for an interval that contains the threshold boundary."""
    if interval.estimate == boundary:
        tail = f", and the estimate {_num(interval.estimate)} sits on the threshold"
    elif interval.kind != "interval":
        tail = ", and every question has been asked"
    else:
        tail = ""
    return Decision("inconclusive", f"{span} straddles the threshold {boundary:+.4g}{tail}")


def decide(interval: Interval, threshold: float, direction: Direction, *, min_clusters: int) -> Decision:
    """Gate an interval of ``tuned - base`` against an allowed change ``threshold >= 0``.

    For ``"increase"`` the harmful change is ``tuned - base > threshold``: fail if the interval lies
    above ``threshold``, pass if it lies at or below it. For ``"decrease"`` the harmful change is
    ``base - tuned > threshold``: fail if the interval lies below ``-threshold``, pass if it lies at or
    above it. Too few clusters, or an interval containing the boundary, is inconclusive.
    """
    if not math.isfinite(threshold) or threshold < 0.0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    if interval.n_clusters < min_clusters:
        return _too_few(interval, min_clusters)
    span = f"the {interval.confidence:.0%} {interval.kind} [{_num(interval.low)}, {_num(interval.high)}]"
    if direction == "increase":
        boundary = threshold
        if interval.low > boundary:
            return Decision("fail", f"{span} lies entirely above the threshold {boundary:+.4g}")
        if interval.high <= boundary:
            return Decision("pass", f"{span} lies at or below the threshold {boundary:+.4g}")
    elif direction == "decrease":
        boundary = -threshold
        if interval.high < boundary:
            return Decision("fail", f"{span} lies entirely below the threshold {boundary:+.4g}")
        if interval.low >= boundary:
            return Decision("pass", f"{span} lies at or above the threshold {boundary:+.4g}")
    else:
        raise ValueError(f"direction must be 'increase' or 'decrease', got {direction!r}")
    return _straddles(interval, boundary, span)
