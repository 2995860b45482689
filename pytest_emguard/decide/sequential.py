"""Sequential stopping (``--em-sequential``): ask the sampled questions in rounds and stop as soon as every gated
item that reads them is decided, on a *group-sequential design* over the rounds, so that looking after each
round does not raise the error rate.

The looks are the rounds themselves, planned before any answer: ``--em-round-size`` more questions of the bank a
round, in a seeded random order (``ordered``, ``rounds``), so the number of questions after each round, ``n_k``,
and its information fraction ``t_k = n_k / N`` are known in advance.  Each end of an item's interval (the lower
end fails it, the upper end passes it) is a one-sided test at ``alpha`` that spends its error over the looks
with the O'Brien-Fleming-type spending function of Lan and DeMets (Biometrika 1983),
``alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``: almost nothing at the early looks, the rest at the last, so
the last look is nearly as tight as the fixed-n test (critical value 1.72 against 1.645 at alpha 5% with four
looks).  The critical value ``c_k`` of each look is the one whose first crossing has probability
``alpha(t_k) - alpha(t_{k-1})`` under the cumulative z-statistics' joint normal law
(``Corr(Z_j, Z_k) = sqrt(t_j / t_k)``), computed by the standard recursive numerical integration (Armitage,
McPherson and Rowe 1969; Jennison and Turnbull 2000, ch. 19) in ``boundaries``.  The two ends are computed
apart (non-binding): stopping for the other end only removes paths that could cross this one, so each end's
error stays at most ``alpha``.

At look ``k`` an item's interval is the mean of the per-question paired differences ``tuned - base`` of the
questions asked so far, plus or minus ``c_k`` standard errors (``look_interval``: ``c_k`` moved to the Student-t
quantile of the same tail for ``n - 1`` degrees of freedom; the standard error no smaller than the floor the
answers' own binomial noise implies, at the look's level; below ``FEW_CLUSTERS`` questions the interval also
covers the fixed-n betting interval at the look's level, as the fixed-n gate's does).  The item is decided at
the first look whose interval decides it (``group_sequential``) and keeps that decision.  An item that reads
only some of the sampled questions (``harmfulness_in_domain``) takes the same looks; its questions are spread at
random through the rounds, so its information fractions are the planned ones on average, not exactly.

The fixed-n bootstrap read after every round is not valid: ``error_rates`` simulates both, and
``tests/unit/test_sequential.py`` checks that peeking with the bootstrap interval exceeds alpha while the design
stays under it, and how often it passes a fine-tune that changes nothing, and after how many questions.

The anytime-valid confidence sequence this mode used before (``stats.betting_interval``, valid at every round at
once) is not kept here: its half-width never falls below 12.5 points at the shipped bank's 64 questions on a
0-100 score, above the thresholds, so it could fail a harmful fine-tune but never pass a benign one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from pytest_emguard.decide.stats import FEW_CLUSTERS, Interval, betting_interval

__all__ = [
    "boundaries",
    "design_line",
    "error_rates",
    "group_sequential",
    "look_interval",
    "looks",
    "narrowest",
    "ordered",
    "questions_for",
    "rounds",
    "simulate",
    "spending",
]

Floor = Callable[[Sequence[str], float], float]  # (the look's questions, its one-sided level) -> an SE floor
GRID = 6  # grid points per SD of one look's increment in the recursive integration (converged at 4)
NO_CROSSING = 40.0  # the critical value of a look that may spend nothing (the z at which Q(z) underflows)
_NORMAL = NormalDist()
_ERFC = np.frompyfunc(math.erfc, 1, 1)


def spending(t: float, alpha: float) -> float:
    """The error one end may have spent by information fraction ``t`` (O'Brien-Fleming type, Lan and DeMets):
    ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``, which is ``alpha`` at ``t = 1``."""
    if t <= 0.0:
        return 0.0
    z = -_NORMAL.inv_cdf(alpha / 2.0)
    return min(alpha, math.erfc(z / math.sqrt(2.0 * min(t, 1.0))))


def _upper_tail(x: np.ndarray) -> np.ndarray:
    """``1 - Phi(x)``, elementwise, accurate far into the tail."""
    return np.asarray(0.5 * _ERFC(x / math.sqrt(2.0)), dtype=np.float64)


def _simpson(n: int, h: float) -> np.ndarray:
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * h / 3.0


@lru_cache(maxsize=256)
def boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """The critical value ``c_k`` of each look at information fractions ``fractions`` (increasing, the last 1):
    a z-statistic at or above ``c_k`` at look ``k``, and below every earlier one, has probability
    ``spending(t_k) - spending(t_{k-1})`` under no effect.  With one look it is ``z_{1-alpha}``.

    The recursion carries the sub-density of the Brownian motion ``W(t_k) = Z_k sqrt(t_k)`` on the region that
    has not crossed (a Simpson grid from ``-8 sqrt(t_k)`` up to ``c_k sqrt(t_k)``), convolves it with the next
    increment ``N(0, t_{k+1} - t_k)``, and finds ``c_{k+1}`` by Newton's method on the exact crossing
    probability ``sum_i f_i Q((c sqrt(t_{k+1}) - w_i) / sqrt(dt))``."""
    if not fractions or any(b <= a for a, b in zip((0.0, *fractions), fractions, strict=False)):
        raise ValueError(f"information fractions must increase from above 0, got {fractions}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    critical: list[float] = []
    spent, before = 0.0, 0.0
    grid = weight = np.zeros(0)  # the grid and the sub-density times the Simpson weights, before this look
    for t in fractions:
        target, dt = spending(t, alpha) - spent, t - before
        if not critical:
            c = -_NORMAL.inv_cdf(target) if target > 0.0 else NO_CROSSING
            crossed = target
        else:
            c, crossed = _solve(grid, weight, math.sqrt(t), math.sqrt(dt), target)
        critical.append(c)
        spent += crossed
        grid, weight = _carry(grid, weight, min(c, 8.0) * math.sqrt(t), t, dt)
        before = t
    return tuple(critical)


def _solve(grid: np.ndarray, weight: np.ndarray, rt: float, s: float, target: float) -> tuple[float, float]:
    """The critical value whose crossing probability from the sub-density ``weight`` on ``grid`` is ``target``
    (Newton's method inside a bisection bracket), and that probability."""

    def crossing(c: float) -> float:
        return float(np.sum(weight * _upper_tail((c * rt - grid) / s)))

    if target <= 0.0:
        return NO_CROSSING, crossing(NO_CROSSING)
    c, low, high = -_NORMAL.inv_cdf(min(target, 0.5)), -10.0, NO_CROSSING
    for _ in range(100):
        gap = crossing(c) - target
        if abs(gap) <= 1e-10 * target:
            break
        low, high = (c, high) if gap > 0 else (low, c)
        u = (c * rt - grid) / s
        slope = -float(np.sum(weight * np.exp(-u * u / 2.0))) * rt / (s * math.sqrt(2.0 * math.pi))
        step = c - gap / slope if slope < 0 else (low + high) / 2.0
        c = step if low < step < high else (low + high) / 2.0
    return c, crossing(c)


def _carry(
    grid: np.ndarray, weight: np.ndarray, top: float, t: float, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """The sub-density of ``W(t)`` on ``[-8 sqrt(t), top]`` (not crossed), times its Simpson weights."""
    bottom = -8.0 * math.sqrt(t)
    n = max(3, math.ceil((top - bottom) * GRID / math.sqrt(min(dt, t))))
    n += 1 - n % 2  # Simpson's rule needs an odd count
    y = np.linspace(bottom, top, n)
    if grid.size == 0:
        density = np.exp(-y * y / (2.0 * t)) / math.sqrt(2.0 * math.pi * t)
    else:
        kernel = np.exp(-((y[:, None] - grid[None, :]) ** 2) / (2.0 * dt)) / math.sqrt(2.0 * math.pi * dt)
        density = kernel @ weight
    return y, density * _simpson(n, float(y[1] - y[0]))


def looks(n: int, size: int) -> list[int]:
    """The questions asked after each round (the looks): ``size`` more a round, ``n`` in all."""
    if n < 1 or size < 1:
        raise ValueError(f"need at least one question and a round of at least one, got {n} and {size}")
    return [min(k * size, n) for k in range(1, -(-n // size) + 1)]


def _fractions(counts: Sequence[int]) -> tuple[float, ...]:
    return tuple(c / counts[-1] for c in counts)


def design_line(counts: Sequence[int], alpha: float) -> str:
    """The plan of the looks, for the progress output."""
    critical = boundaries(_fractions(counts), alpha)
    return (
        f"sequential: {len(counts)} look(s), after {', '.join(map(str, counts))} questions; O'Brien-Fleming-type "
        f"alpha spending at {alpha:g} per end: critical values {', '.join(f'{c:.2f}' for c in critical)}"
    )


def _student(z: float, df: int) -> float:
    """The Student-t quantile with ``df`` degrees of freedom of the upper tail ``1 - Phi(z)`` (the Cornish-Fisher
    expansion, Abramowitz and Stegun 26.7.5: within 0.2% at 8 or more degrees of freedom and z up to 4; below
    ``FEW_CLUSTERS`` questions the betting interval governs anyway)."""
    v = float(max(df, 1))
    terms = (
        (z**3 + z) / 4.0,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96.0,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0,
    )
    return z + sum(term / v ** (i + 1) for i, term in enumerate(terms))


def look_interval(
    diffs: Sequence[float], critical: float, alpha: float, span: float, floor: float = 0.0, look: str = ""
) -> Interval:
    """The interval of one look: the mean of ``diffs`` (per-question differences, each within ``[-span, span]``)
    plus or minus ``critical`` (as a Student-t quantile) standard errors of at least ``floor``; below
    ``FEW_CLUSTERS`` questions it also covers the fixed-n betting interval at the look's level; clamped to
    ``[-span, span]``.  ``alpha`` is the design's error per end (the interval is labelled at ``1 - 2 alpha``)."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no differences at this look")
    estimate = math.fsum(diffs) / n
    level = max(float(_upper_tail(np.array([critical]))[0]), 1e-15)
    low, high = -span, span
    if n > 1:
        se = max(float(np.std(diffs, ddof=1)) / math.sqrt(n), floor)
        half = _student(critical, n - 1) * se
        low, high = max(estimate - half, -span), min(estimate + half, span)
    if 1 < n < FEW_CLUSTERS:
        bet = betting_interval(diffs, span, level, fixed_n=True)
        low, high = min(low, bet.low), max(high, bet.high)
    kind = f"group-sequential interval{f' ({look})' if look else ''}"
    return Interval(estimate, low, high, 1.0 - 2.0 * alpha, n, n, kind)


def group_sequential(
    asked: Sequence[tuple[str, float | None]],
    counts: Sequence[int],
    *,
    alpha: float,
    span: float,
    decides: Callable[[Interval], bool],
    floor: Floor | None = None,
) -> Interval:
    """An item's interval in the group-sequential design: ``asked`` holds the questions asked so far in the order
    asked, each with its paired difference (None where a side had no valid value), ``counts`` the planned looks
    (``looks``).  The looks reached so far are read in turn, and the first whose interval ``decides`` the item is
    the answer (a decided item keeps its decision); else the latest look's."""
    critical = boundaries(_fractions(counts), alpha)
    reached = max(1, sum(1 for c in counts if c <= len(asked)))
    latest: Interval | None = None
    for k in range(reached):
        part = [(c, d) for c, d in asked[: counts[k]] if d is not None]
        if not part:
            continue
        level = float(_upper_tail(np.array([critical[k]]))[0])
        below = floor([c for c, _ in part], max(level, 1e-15)) if floor is not None else 0.0
        look = f"look {k + 1} of {len(counts)}"
        latest = look_interval([d for _, d in part], critical[k], alpha, span, below, look)
        if decides(latest):
            return latest
    if latest is None:
        raise ValueError("no question has a paired difference")
    return latest


def narrowest(n: int, sd: float, alpha: float, size: int, span: float) -> float:
    """The half-width of the last look's interval at ``n`` questions in rounds of ``size``, for differences whose
    mean is zero and whose SD is ``sd``: a fine-tune that changes nothing, at the planned spread.  An item whose
    threshold is not above it could fail early but never pass in sequential mode."""
    counts = looks(n, size)
    critical = boundaries(_fractions(counts), alpha)[-1]
    if n == 1:
        return span
    a = sd if n % 2 else sd * math.sqrt((n - 1) / n)  # mean exactly zero, sample SD exactly sd
    diffs = [a * (-1) ** i for i in range(n - n % 2)] + [0.0] * (n % 2)
    interval = look_interval(diffs, critical, alpha, span)
    return interval.high - interval.estimate


def questions_for(
    threshold: float, sd: float, alpha: float, size: int, span: float, limit: int = 10_000
) -> int | None:
    """Questions at which ``narrowest`` falls below ``threshold`` while at one fewer it does not (doubling, then
    bisection; None past ``limit``)."""
    if threshold <= 0:
        return None
    high = 2
    while narrowest(high, sd, alpha, size, span) >= threshold:
        if high >= limit:
            return None
        high = min(2 * high, limit)
    low = 1  # narrowest(1) is the span: never below a threshold under it
    while high - low > 1:
        middle = (low + high) // 2
        if narrowest(middle, sd, alpha, size, span) < threshold:
            high = middle
        else:
            low = middle
    return high


def ordered(clusters: Iterable[str], seed: int) -> list[str]:
    """The seeded random order in which questions are asked (the same on both sides, and the same order for any
    subset of them: each question's place is a hash of the seed and its id)."""
    from pytest_emguard.types import derive_seed

    return sorted(set(clusters), key=lambda c: (derive_seed(seed, "sequential", c), c))


def rounds(order: Sequence[str], size: int) -> list[list[str]]:
    """The questions of each round: ``size`` more per round, in ``order``."""
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def _run(
    d: np.ndarray, counts: Sequence[int], threshold: float, alpha: float, span: float
) -> tuple[str, int]:
    """One simulated run of an increase item through ``group_sequential``: its outcome and the questions used.
    ``d``: per-question differences, or the answers of a rate (question x answer x (base, tuned), each 0 or
    ``span``), whose differences are the per-question shares' and whose looks also take the gate's binomial
    floor (``stats.binary_floor`` at the look's level)."""
    from pytest_emguard.decide.stats import binary_floor

    floor: Floor | None = None
    if d.ndim == 3:
        pairs = {str(i): [(float(b), float(u)) for b, u in question] for i, question in enumerate(d)}

        def floor(clusters: Sequence[str], level: float) -> float:
            return binary_floor([p for c in clusters for p in pairs[c]], 0.0, span, alpha=level)

        d = d[:, :, 1].mean(axis=1) - d[:, :, 0].mean(axis=1)
    interval = group_sequential(
        [(str(i), float(v)) for i, v in enumerate(d)],
        counts,
        alpha=alpha,
        span=span,
        decides=lambda iv: iv.high <= threshold or iv.low > threshold,
        floor=floor,
    )
    if interval.high <= threshold:
        return "pass", interval.n_clusters
    return ("fail" if interval.low > threshold else "inconclusive"), interval.n_clusters


def simulate(
    draw: Callable[[np.random.Generator, int], np.ndarray],
    *,
    n: int,
    looks: Sequence[int],
    threshold: float,
    alpha: float,
    runs: int,
    span: float = 100.0,
    seed: int = 0,
) -> dict[str, float]:
    """Operating characteristics of the design for an increase item (``draw(rng, n)`` gives one run's
    per-question differences, or a rate's answers: see ``_run``): the share of runs that pass, fail and stay
    inconclusive, the mean number of questions asked (the look at which the run stopped) and the share of runs
    that stopped before the last look ("early")."""
    rng = np.random.default_rng(seed)
    tally = {"pass": 0, "fail": 0, "inconclusive": 0}
    used = early = 0
    for _ in range(runs):
        outcome, k = _run(draw(rng, n), looks, threshold, alpha, span)
        tally[outcome] += 1
        used += k
        early += outcome != "inconclusive" and k < looks[-1]
    return {
        **{name: count / runs for name, count in tally.items()},
        "questions": used / runs,
        "early": early / runs,
    }


def error_rates(
    draw: Callable[[np.random.Generator, int], np.ndarray],
    *,
    n: int,
    looks: Sequence[int],
    threshold: float,
    span: float,
    alpha: float,
    runs: int,
    seed: int = 0,
) -> dict[str, float]:
    """Simulated share of runs that wrongly PASS an increase whose true mean difference is above ``threshold``
    (``draw(rng, n)`` gives one run's per-question differences) when the interval is read after each look and
    the run stops at the first decision: the fixed-n bootstrap-t interval read at every look ("peek bootstrap"),
    the same read once at ``n`` ("fixed bootstrap"), and the group-sequential design at every look
    ("sequential"); with the mean number of questions each used."""
    from pytest_emguard.decide.stats import Paired, bootstrap

    rng = np.random.default_rng(seed)
    wrong = {"peek bootstrap": 0, "fixed bootstrap": 0, "sequential": 0}
    used = {"peek bootstrap": 0, "fixed bootstrap": 0, "sequential": 0}

    def boot(d: np.ndarray) -> Interval:
        paired = Paired(tuple(str(k) for k in range(len(d))), np.zeros(len(d)), d, 2 * len(d), 0)
        return bootstrap(paired, rng, alpha=alpha, n_boot=400, calibrate=0)

    for _ in range(runs):
        d = draw(rng, n)
        for name, when in (("peek bootstrap", looks), ("fixed bootstrap", [n])):
            for k in when:
                interval = boot(d[:k])
                if interval.high <= threshold:  # a pass: wrong, the true difference is above the threshold
                    wrong[name] += 1
                    used[name] += k
                    break
                if interval.low > threshold or k == when[-1]:
                    used[name] += k
                    break
        outcome, k = _run(d, looks, threshold, alpha, span)
        wrong["sequential"] += outcome == "pass"
        used["sequential"] += k
    return {
        **{f"{name} wrong pass": wrong[name] / runs for name in wrong},
        **{f"{name} questions": used[name] / runs for name in used},
    }
