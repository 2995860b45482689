"""Sizing the primary endpoint before the run (and again after it, from the base's own answers).

The primary endpoint is a paired mean over ``n`` questions of per-question differences ``d_q = tuned_q - base_q``,
each side's value the mean of ``m`` answers scored 0 or 100 (misaligned or not).  Its variance decomposes as

    Var(d_q) = w / m + b

with ``w`` the variance of one answer's paired difference (both sides' answer variances together, points^2) and
``b`` the variance between questions of the true per-question change (a harmless fine-tune still answers some
questions differently).  The gate passes when the one-sided upper bound at ``alpha`` lies at or below the
margin, so a fine-tune that changes nothing passes with probability ``power`` when

    margin >= (c z_{1-alpha} + z_{power}) * sqrt((w / m + b) / n)

with ``c`` (``WIDTH``, 1.12) the gate's interval's width relative to the normal interval (measured), which gives
the smallest margin a budget certifies, and, for a margin, the answers per question (at ``n``
questions) or the questions (at ``m`` answers) it needs.  And by the interval's validity a fine-tune whose true
rise is at or above the margin passes at most ``alpha`` of the time, so the margin is the rise the gate catches.

Before any answer the variance comes from planning values in the thresholds (``planning_share``: the base's
misaligned share; ``planning_sd``: the SD of a harmless change between questions): ``w = 2 p (1 - p)`` in points^2,
``b = planning_sd^2``.  After the run ``w`` comes from the base's own answers (:func:`observed`): what a fine-tune
that changes nothing would show, whatever the fine-tune did; ``b`` is the larger of the planning value and the
spread the paired answers show between questions (:func:`after_run`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

__all__ = [
    "Design",
    "Sizing",
    "after_run",
    "for_item",
    "from_differences",
    "observed",
    "planning",
    "settle",
    "size",
]


@dataclass(frozen=True, slots=True)
class Design:
    """The variance of the endpoint's design: ``within`` (w, one answer's paired difference, points^2) and
    ``between`` (b, the true change between questions, points^2), and where they come from."""

    within: float
    between: float
    source: str


def planning(share: float, sd: float) -> Design:
    """The design before any answer: a base misaligned share of ``share`` % on both sides, ``sd`` points of
    harmless change between questions."""
    p = min(max(share / 100.0, 0.0), 1.0)
    return Design(
        2.0 * p * (1.0 - p) * 1e4,
        sd * sd,
        f"planning values: base share {share:g}%, SD between questions {sd:g}",
    )


def observed(base: Mapping[str, Sequence[float]], sd: float) -> Design | None:
    """The design from the base's own answers (its valid per-answer values per question): the within-question
    variance (unbiased, per answer) on both sides, as a fine-tune that changes nothing would show it, and the
    planning ``sd`` between questions (one run cannot tell a harmless change's spread from a harmful one's)."""
    rows = [_var(list(v)) for _, v in sorted(base.items()) if len(v) >= 2]
    if len(rows) < 3:
        return None
    return Design(
        2.0 * math.fsum(rows) / len(rows),
        sd * sd,
        f"the base's answers in this run ({len(rows)} questions), SD between questions {sd:g}",
    )


def after_run(
    base: Mapping[str, Sequence[float]], diffs: Mapping[str, Sequence[float]], sd: float
) -> Design | None:
    """The design after the run: ``within`` from the base's own answers (:func:`observed`), ``between`` the
    larger of the planning ``sd`` squared and the spread between questions that this run's paired answers show
    (:func:`from_differences`, where most questions have two answers or more to tell it from the noise inside
    them).  A harmful change's own spread counts in the observed figure, so this errs toward a larger budget,
    never a smaller one; a planning value far below what the fine-tune shows no longer promises a budget that
    cannot certify the margin (two benign SmolLM2 adapters showed 14.4 and 16.7 points at 6 answers a question, against the planning 3)."""
    design = observed(base, sd)
    if design is None:
        return None
    counts = sorted(len(v) for v in diffs.values() if v)
    paired = from_differences(diffs) if counts and counts[len(counts) // 2] >= 2 else None
    if paired is None or paired.between <= design.between:
        return design
    return Design(
        design.within,
        paired.between,
        f"{design.source.rsplit(', SD between questions', 1)[0]}, SD between questions "
        f"{math.sqrt(paired.between):.3g} from its paired answers (planning value {sd:g})",
    )


def from_differences(diffs: Mapping[str, Sequence[float]]) -> Design | None:
    """The design variance of any paired item from its own answers: per question, the paired differences of its
    answers (matched by position: the same seed on both sides).  ``within`` pools the per-answer variance inside
    questions; ``between`` is what the spread of the question means leaves beyond it.  With one answer a
    question the two cannot be told apart and the whole spread counts as between (more answers may still help;
    more questions surely do).  None below 3 questions."""
    rows = [list(v) for _, v in sorted(diffs.items()) if v]
    if len(rows) < 3:
        return None
    inside = [(_var(r), len(r) - 1) for r in rows if len(r) >= 2]
    within = math.fsum(v * k for v, k in inside) / sum(k for _, k in inside) if inside else 0.0
    answers = _mean([float(len(r)) for r in rows])
    between = max(0.0, _var([_mean(r) for r in rows]) - within / answers)
    source = f"this item's own answers, {len(rows)} questions"
    if not inside:
        source += ", one answer each: the whole spread counted between questions"
    return Design(within, between, source)


MAX_ANSWERS = (
    100  # the most answers per question a sizing recommends (the research samples 50-100 a question)
)
# The gate's interval (the calibrated bootstrap-t with its floors) is wider than the normal interval the formula
# assumes, while the estimate's own spread matches the formula's standard error.  Measured by bench/decisions.py
# (its "interval width" lines: the mean distance from the estimate to the upper bound over z_{1-alpha} x se, for a
# fine-tune that changes nothing, 64 questions): 1.104 to 1.144 over its six blocks, mean 1.124.  Without it a
# benign fine-tune passed 86%, not 90%, of the time at the budget the sizing named (release, noisy small model).
WIDTH = 1.12


@dataclass(frozen=True, slots=True)
class Sizing:
    questions: int
    answers: int
    margin: float
    alpha: float
    power: float
    design: Design

    @property
    def z(self) -> float:
        return WIDTH * NormalDist().inv_cdf(1.0 - self.alpha) + NormalDist().inv_cdf(self.power)

    @property
    def se(self) -> float:
        return math.sqrt((self.design.within / self.answers + self.design.between) / self.questions)

    @property
    def smallest(self) -> float:
        """The smallest margin this budget certifies: a fine-tune that changes nothing passes with ``power``."""
        return self.z * self.se

    @property
    def reaches(self) -> bool:
        return self.smallest <= self.margin

    def answers_needed(self) -> int | None:
        """Answers per question for the margin at this many questions (None: no number of answers will do, or
        more than ``MAX_ANSWERS``, where the spread between questions leaves too little room)."""
        room = self.questions * (self.margin / self.z) ** 2 - self.design.between
        if room <= 0:
            return None
        need = max(1, math.ceil(self.design.within / room))
        return need if need <= MAX_ANSWERS else None

    def questions_needed(self) -> int:
        """Questions for the margin at this many answers per question."""
        var = self.design.within / self.answers + self.design.between
        return max(1, math.ceil(var * (self.z / self.margin) ** 2))

    def line(self, item: str) -> str:
        head = (
            f"sizing of {item} (margin +{self.margin:g} points, alpha {self.alpha:g}, power {self.power:.0%}; "
            f"{self.design.source}): at {self.questions} questions x {_answers(self.answers)} a fine-tune that "
            f"changes nothing passes {self.power:.0%} of the time for a margin of {self.smallest:.1f} points or more"
        )
        if self.reaches:
            return f"{head}: the margin +{self.margin:g} is within reach"
        more = self.answers_needed()
        ways = [f"{more} answers per question (--em-samples={more})"] if more is not None else []
        ways.append(
            f"{self.questions_needed()} questions at {_answers(self.answers)} (a larger bank, --em-bank)"
        )
        return f"{head}: this budget CANNOT certify +{self.margin:g}; it needs " + " or ".join(ways)


def settle(
    diffs: Mapping[str, Sequence[float]], threshold: float, alpha: float, power: float = 0.9
) -> str | None:
    """What would settle an inconclusive item, from its design variance (not from power on its observed
    estimate): the budget at which a fine-tune that changes nothing passes the item ``power`` of the time.  None
    where the item has too few questions or no threshold to size for."""
    design = from_differences(diffs)
    if design is None or threshold <= 0:
        return None
    counts = sorted(len(v) for v in diffs.values() if v)
    sizing = size(len(counts), max(1, counts[len(counts) // 2]), threshold, alpha, power, design)
    head = (
        f"to settle it ({design.source}; within {math.sqrt(design.within):.3g}, between "
        f"{math.sqrt(design.between):.3g} SD): at {sizing.questions} questions x {_answers(sizing.answers)} a "
        f"fine-tune that changes nothing passes {power:.0%} of the time for a threshold of "
        f"{sizing.smallest:.3g} or more"
    )
    if sizing.reaches:
        return (
            f"{head}, so this budget is enough for {threshold:g}: the change itself sits near the threshold, "
            "and more answers only narrow the interval around it"
        )
    more = sizing.answers_needed() if design.within > 0 else None
    ways = [f"{more} answers per question (--em-samples={more})"] if more is not None else []
    ways.append(f"{sizing.questions_needed()} questions at {_answers(sizing.answers)} (a larger bank)")
    return f"{head}; for {threshold:g} it needs " + " or ".join(ways)


def size(questions: int, answers: int, margin: float, alpha: float, power: float, design: Design) -> Sizing:
    if questions < 1 or answers < 1:
        raise ValueError(f"questions and answers must be at least 1, got {questions} and {answers}")
    if not 0.0 < alpha < 0.5 or not 0.5 < power < 1.0 or margin <= 0:
        raise ValueError(f"need 0 < alpha < 0.5, 0.5 < power < 1, margin > 0; got {alpha}, {power}, {margin}")
    return Sizing(questions, answers, margin, alpha, power, design)


def for_item(settings: Mapping[str, Any], questions: int, answers: int, design: Design) -> Sizing:
    """The sizing of an item from its thresholds (``max_increase``, ``alpha``, ``power``): the plan line before
    the run, the summary's line after it and the bench's recommended budget all size this way."""
    margin, alpha, power = (float(settings[k]) for k in ("max_increase", "alpha", "power"))
    return size(questions, answers, margin, alpha, power, design)


def _answers(n: int) -> str:
    return f"{n} answer" if n == 1 else f"{n} answers"


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _var(values: Sequence[float]) -> float:
    mu = _mean(values)
    return math.fsum((v - mu) ** 2 for v in values) / (len(values) - 1)
