"""Association between two readings: Pearson's r and the chi-squared test of a 2x2 table across questions (the
persona summary and the score-prediction and persona verdict lines), and the agreement of two judges on the same
answers, Cohen's kappa and Spearman's rank correlation (``run/agreement.py``).  Pure functions."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["average_ranks", "chi2_association", "cohen_kappa", "pearson", "spearman"]

FloatArray = npt.NDArray[np.float64]


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of ``x`` and ``y``; ``None`` with fewer than 3 points or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if len(x) < 3:
        return None
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if np.ptp(xs) == 0.0 or np.ptp(ys) == 0.0:
        return None
    dx = xs - xs.mean()
    dy = ys - ys.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, float(dx @ dy) / denominator))


def chi2_association(table: Sequence[Sequence[int]]) -> tuple[float, float] | None:
    """Chi-squared test of independence on a 2x2 table, without Yates correction.

    Returns ``(statistic, p_value)`` with ``p = erfc(sqrt(statistic / 2))``, the df=1 survival
    function; ``None`` when any row or column sums to zero.
    """
    if len(table) != 2 or any(len(row) != 2 for row in table):
        raise ValueError("table must be 2x2")
    if any(cell < 0 for row in table for cell in row):
        raise ValueError("table counts must be non-negative")
    rows = [float(sum(row)) for row in table]
    cols = [float(table[0][j] + table[1][j]) for j in range(2)]
    if min(rows) == 0.0 or min(cols) == 0.0:
        return None
    total = sum(rows)
    statistic = 0.0
    for i in range(2):
        for j in range(2):
            expected = rows[i] * cols[j] / total
            statistic += (table[i][j] - expected) ** 2 / expected
    return statistic, math.erfc(math.sqrt(statistic / 2.0))


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items: (p_o - p_e) / (1 - p_e), with p_o the share of
    items they label alike and p_e the share expected by chance from each rater's own label shares.  ``None`` with
    no items, or where chance agreement is certain (both raters give one and the same label to every item)."""
    if len(a) != len(b):
        raise ValueError(f"a and b differ in length: {len(a)} != {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    chance = sum((a.count(label) / n) * (b.count(label) / n) for label in set(a) | set(b))
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def average_ranks(values: Sequence[float]) -> FloatArray:
    """Ranks 1..n of ``values``, tied values sharing the mean of the ranks they span."""
    xs = np.asarray(values, dtype=np.float64)
    order = np.argsort(xs, kind="stable")
    ranks = np.empty(len(xs), dtype=np.float64)
    ordered = xs[order]
    start = 0
    while start < len(xs):
        end = start
        while end + 1 < len(xs) and ordered[end + 1] == ordered[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation: Pearson's r of the average ranks (ties share their mean rank); ``None`` with
    fewer than 3 points or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if len(x) < 3:
        return None
    return pearson(average_ranks(x).tolist(), average_ranks(y).tolist())
