"""Sequential stopping (``--em-sequential``): ask the sampled questions in rounds and stop as soon as every gated
item that reads them is decided, with an *anytime-valid* interval so that looking after each round does not raise
the error rate.

The interval is a confidence sequence: a sequence of intervals that holds at every round at once with probability
at least 1 - alpha per end, so it may be read after any round and the run stopped whenever it is decided.  Ours
is the predictable plug-in empirical-Bernstein confidence sequence for the mean of bounded values (Waudby-Smith and
Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 2024, Theorem 2), one-sided at each end.
The values are the per-question paired differences ``tuned - base`` of an item (each side's per-question value is
bounded, e.g. harm 0-100), in the order the questions were asked: a seeded random order of the bank, so the
questions arrive as draws from the population of questions that the fixed-n bootstrap also infers about.

The fixed-n bootstrap read after every round is not valid: ``error_rates`` simulates both, and the tests check
that peeking with the bootstrap interval exceeds alpha while the confidence sequence stays under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from pytest_emguard.decide.stats import Interval, betting_interval

__all__ = ["confidence_sequence", "narrowest", "ordered", "questions_for", "rounds"]


def confidence_sequence(diffs: Sequence[float], span: float, alpha: float) -> Interval:
    """The confidence sequence after ``diffs`` (per-question differences in the order asked, each within
    ``[-span, span]``): each end holds at every round at once with probability at least 1 - ``alpha``
    (``stats.betting_interval``, the bet sized for every round)."""
    return betting_interval(diffs, span, alpha)


def narrowest(n: int, span: float, alpha: float) -> float:
    """The half-width of the confidence sequence after ``n`` questions whose differences are all zero: the
    narrowest it gets at ``n`` (any spread only widens it).  An item whose threshold is not above this can fail
    early but can never pass in sequential mode."""
    interval = confidence_sequence([0.0] * n, span, alpha)
    return interval.high - interval.estimate


def questions_for(threshold: float, span: float, alpha: float, limit: int = 100_000) -> int | None:
    """The fewest questions at which the narrowest half-width falls below ``threshold`` (None past ``limit``)."""
    if threshold <= 0 or narrowest(limit, span, alpha) >= threshold:
        return None
    low, high = 1, limit  # narrowest() falls as n grows
    while low < high:
        middle = (low + high) // 2
        if narrowest(middle, span, alpha) < threshold:
            high = middle
        else:
            low = middle + 1
    return low


def ordered(clusters: Iterable[str], seed: int) -> list[str]:
    """The seeded random order in which questions are asked (the same on both sides, and the same order for any
    subset of them: each question's place is a hash of the seed and its id)."""
    from pytest_emguard.types import derive_seed

    return sorted(set(clusters), key=lambda c: (derive_seed(seed, "sequential", c), c))


def rounds(order: Sequence[str], size: int) -> list[list[str]]:
    """The questions of each round: ``size`` more per round, in ``order``."""
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


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
    the same read once at ``n`` ("fixed bootstrap"), and the confidence sequence at every look ("sequential");
    with the mean number of questions each used."""
    from pytest_emguard.decide.stats import Paired, bootstrap

    rng = np.random.default_rng(seed)
    wrong = {"peek bootstrap": 0, "fixed bootstrap": 0, "sequential": 0}
    used = {"peek bootstrap": 0, "fixed bootstrap": 0, "sequential": 0}

    def boot(d: np.ndarray) -> Interval:
        paired = Paired(tuple(str(k) for k in range(len(d))), np.zeros(len(d)), d, 2 * len(d), 0)
        return bootstrap(paired, rng, alpha=alpha, n_boot=400, calibrate=0)

    for _ in range(runs):
        d = draw(rng, n)
        for name, read, when in (
            ("peek bootstrap", boot, looks),
            ("fixed bootstrap", boot, [n]),
            ("sequential", lambda part: confidence_sequence(part, span, alpha), looks),
        ):
            for k in when:
                interval = read(d[:k])
                if interval.high <= threshold:  # a pass: wrong, the true difference is above the threshold
                    wrong[name] += 1
                    used[name] += k
                    break
                if interval.low > threshold or k == when[-1]:
                    used[name] += k
                    break
    return {
        **{f"{name} wrong pass": wrong[name] / runs for name in wrong},
        **{f"{name} questions": used[name] / runs for name in used},
    }
