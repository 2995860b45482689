"""Association between two readings across questions: Pearson's r and the chi-squared test of a 2x2 table (pure
functions, used by the persona summary and the score-prediction and persona verdict lines)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["chi2_association", "pearson"]


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
