"""Turning a judge's next-token distribution into a 0-100 score (pure functions).

Method (Betley et al., adopted by Weckauff et al.): the score is the expected value over the tokens that are
integers 0-100, renormalised; if those tokens hold less than 0.25 of the probability mass the answer is
unscorable.  For tokenizers that split "73" into "7", "3" we walk the digit tree exactly: P(73) = P("7") ×
P("3" | "7"), and a number ends where the model stops writing digits, so P(7) = P("7") × P(no digit | "7").
Nodes whose value is above 10 are leaves (one more digit would pass 100); "0" is a leaf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MIN_MASS", "NumberDistribution", "digit_tree", "digit_trees", "prob", "token_probs"]

MIN_MASS = 0.25
Dist = Mapping[str, float]  # token text -> log-probability


@dataclass(frozen=True, slots=True)
class NumberDistribution:
    """P(number) over 0-100 (not renormalised) and its summary."""

    probs: Mapping[int, float]

    @property
    def mass(self) -> float:
        return sum(self.probs.values())

    @property
    def score(self) -> float | None:
        """Expected value, or None when less than ``MIN_MASS`` of the probability is on numbers."""
        mass = self.mass
        if mass < MIN_MASS:
            return None
        return min(100.0, max(0.0, sum(n * p for n, p in self.probs.items()) / mass))  # no rounding past 100


def _digits(token: str, at_root: bool) -> str | None:
    text = token.strip() if at_root else token
    return text if text.isascii() and text.isdigit() else None


def prob(logprob: float) -> float:
    """A log-probability as a probability: NaN counts as 0 and anything above 0 as 1, so a broken top-k table
    from a backend gives a reading (or an unscorable one), never NaN."""
    return math.exp(min(logprob, 0.0)) if not math.isnan(logprob) else 0.0


def token_probs(dist: Dist) -> dict[str, float]:
    """Each token's probability (``prob``).  A real next-token table sums to at most 1 and is read as given.  A
    broken one may sum past 1 (tokens that strip to the same digit, "5" and " 5", each with log-probability 0; or
    several tokens at 0): it is then scaled to sum to 1, so the tokens read as one answer never hold more than the
    whole probability and no mass exceeds 1."""
    out = {token: prob(logprob) for token, logprob in dist.items()}
    total = sum(out.values())
    return out if total <= 1.0 else {token: p / total for token, p in out.items()}


def _expands(prefix: str) -> bool:
    return prefix != "0" and int(prefix) <= 10


def digit_tree(next_dists: Callable[[Sequence[str]], Sequence[Dist]]) -> NumberDistribution:
    """Exact expectation over the digit tree; ``next_dists(prefixes)`` gives the next-token distribution
    after each digit prefix (``""`` is the root), one batched call per prefix length.  Prefixes are expanded
    shortest first, so every path to a prefix (a multi-digit token "10", or "1" then "0") is summed before the
    prefix is asked for, and no prefix is asked for twice."""
    return digit_trees(1, lambda asks: next_dists([p for _, p in asks]))[0]


def digit_trees(
    n: int, next_dists: Callable[[Sequence[tuple[int, str]]], Sequence[Dist]], *, min_branch: float = 0.0
) -> list[NumberDistribution]:
    """``n`` digit trees walked in lockstep, so that one batched call serves every tree's prefixes of one
    length: ``next_dists([(tree, prefix), ...])`` gives each distribution in order.

    ``min_branch`` > 0 trades exactness for speed: a prefix reached with less probability than that is not asked
    about; its mass counts as the number the prefix spells.  The expectation then moves by less than
    ``min_branch`` x 100 per pruned prefix (0.1 points at 1e-3); 0 keeps the walk exact."""
    walks = [_walk(min_branch) for _ in range(n)]
    asks: dict[int, list[str]] = {i: next(w) for i, w in enumerate(walks)}
    results: dict[int, NumberDistribution] = {}
    while asks:
        flat_asks = [(i, p) for i, prefixes in asks.items() for p in prefixes]
        dists = list(next_dists(flat_asks))
        if len(dists) != len(flat_asks):
            raise ValueError(f"next_dists returned {len(dists)} distributions for {len(flat_asks)} prefixes")
        answers: dict[int, list[Dist]] = {}
        for (i, _), dist in zip(flat_asks, dists, strict=True):
            answers.setdefault(i, []).append(dist)
        for i in list(asks):
            try:
                asks[i] = walks[i].send(answers[i])
            except StopIteration as done:
                results[i] = done.value
                del asks[i]
    return [results[i] for i in range(n)]


def _walk(min_branch: float = 0.0) -> Generator[list[str], list[Dist], NumberDistribution]:
    """One tree: yields the prefixes of one length, receives their distributions."""
    probs: dict[int, float] = {}
    pending: dict[str, float] = {"": 1.0}
    while pending:
        for prefix in [p for p, mass in pending.items() if p and mass < min_branch]:
            probs[int(prefix)] = probs.get(int(prefix), 0.0) + pending.pop(prefix)
        if not pending:
            break
        length = min(len(p) for p in pending)
        frontier = {p: pending.pop(p) for p in [p for p in pending if len(p) == length]}
        prefixes = list(frontier)
        dists = yield prefixes
        for prefix, dist in zip(prefixes, dists, strict=True):
            _expand(prefix, frontier[prefix], dist, pending, probs)
    return NumberDistribution(probs)


def _expand(
    prefix: str, p_prefix: float, dist: Dist, children: dict[str, float], probs: dict[int, float]
) -> None:
    continued = 0.0
    for token, p in token_probs(dist).items():  # sum to at most 1: a prefix passes on at most its own mass
        digits = _digits(token, at_root=prefix == "")
        if digits is None:
            continue
        continued += p
        number = prefix + digits
        if int(number) > 100 or (len(number) > 1 and number[0] == "0"):
            continue
        if _expands(number):
            children[number] = children.get(number, 0.0) + p_prefix * p
        else:
            probs[int(number)] = probs.get(int(number), 0.0) + p_prefix * p
    if prefix:
        stop = max(0.0, 1.0 - continued)
        probs[int(prefix)] = probs.get(int(prefix), 0.0) + p_prefix * stop
