"""Readings from next-token probabilities (``digits``, ``choice``, ``scale``, ``contrast``; ``state`` readings go
to ``activations.py``): one exact reading per query, no sampling.  A digit tree reads a number 0-100 in a few
steps (``judge/scoring.digit_trees``); a choice reads P("A") against P("B"); a scale reads the mean over rating
tokens; a contrast compares whole continuations."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pytest_emguard.checks.base import Query
from pytest_emguard.run.activations import decode_states, states
from pytest_emguard.run.context import Record, RunContext, by_check, cached_or_made, prompt_of, same_length
from pytest_emguard.run.plan import MIN_BRANCH, TOP_K, reading_key
from pytest_emguard.run.records import Rows
from pytest_emguard.types import Reading, Sample

if TYPE_CHECKING:
    from pytest_emguard.backends.base import NextTokenLogprobs

__all__ = ["letter_choice", "read", "reading_sample", "readings", "scale_reading"]


def readings(ctx: RunContext, side: str, queries: Sequence[Query]) -> Rows:
    """``side``'s readings of the ``queries`` read from probabilities (None where the cache lacks one and
    nothing is computed)."""
    fp = ctx.fingerprints[side]
    wanted = [(q, reading_key(fp, q)) for q in queries if q.reading != "sample"]
    found = ctx.cache.get_many(k for _, k in wanted)
    ctx.stats.records_cached += len(found)
    missing = [(q, k) for q, k in wanted if k not in found]
    if missing and ctx.compute:
        for check, group in by_check(missing, lambda qk: qk[0].check):
            started = time.monotonic()
            activations = [qk for qk in group if qk[0].reading == "state"]
            if activations:
                found.update(states(ctx, side, activations))
            if len(activations) < len(group):
                found.update(read(ctx, side, [qk for qk in group if qk[0].reading != "state"]))
            ctx.stats.timed(check, started)
    return {q.key: [reading_sample(found[k]) if k in found else None] for q, k in wanted}


def read(
    ctx: RunContext, side: str, missing: list[tuple[Query, str]], backend: NextTokenLogprobs | None = None
) -> dict[str, Record]:
    """Readings of ``side``'s model, or of ``backend`` where given (a rater; digit and letter readings)."""
    from pytest_emguard.backends.base import NextTokenLogprobs, require
    from pytest_emguard.judge.scoring import digit_trees

    if backend is None:
        who = f"{side} model ({ctx.config.model.backend} backend)"
        backend = require(getattr(ctx.models(), side), NextTokenLogprobs, who)  # type: ignore[type-abstract]
    reader = backend
    ctx.progress(
        f"{side}: reading {len(missing)} ratings from next-token probabilities ({missing[0][0].check})"
    )

    def make(chunk: list[tuple[Query, str]]) -> dict[str, Record]:
        def dists(asks: Sequence[tuple[int, str]]) -> list[dict[str, float]]:
            return reader.next_token_logprobs([prompt_of(chunk[i][0], p) for i, p in asks], top_k=TOP_K)

        trees = [i for i, (q, _) in enumerate(chunk) if q.reading == "digits"]

        def tree_dists(asks: Sequence[tuple[int, str]]) -> list[dict[str, float]]:
            return dists([(trees[i], p) for i, p in asks])

        numbers = digit_trees(len(trees), tree_dists, min_branch=MIN_BRANCH)
        batch: dict[str, Record] = {
            chunk[i][1]: {"value": n.score, "mass": n.mass} for i, n in zip(trees, numbers, strict=True)
        }
        choices = [i for i, (q, _) in enumerate(chunk) if q.reading == "choice"]
        if choices:
            for i, dist in zip(choices, dists([(i, "") for i in choices]), strict=True):
                batch[chunk[i][1]] = letter_choice(dist)
        scales = [i for i, (q, _) in enumerate(chunk) if q.reading == "scale"]
        if scales:
            for i, dist in zip(scales, dists([(i, "") for i in scales]), strict=True):
                batch[chunk[i][1]] = scale_reading(dist, chunk[i][0].options)
        contrasts = [(q, key) for q, key in chunk if q.reading == "contrast"]
        if contrasts:
            batch.update(
                zip([k for _, k in contrasts], _contrasts(ctx, side, [q for q, _ in contrasts]), strict=True)
            )
        return batch

    def shown(done: int, total: int) -> None:
        ctx.tick(f"{side} ratings", f"{side}: {done}/{total} ratings read", done, total)

    # a digit tree asks ~20 prompts in 3 steps; the backend bounds each pass
    done = cached_or_made(ctx, "reading", missing, make, size=ctx.config.options.batch_size, shown=shown)
    ctx.stats.records_made += len(done)
    return done


def _contrasts(ctx: RunContext, side: str, queries: Sequence[Query]) -> list[Record]:
    """Per query, 100 x the probability of its first option among its options, each scored as a whole
    continuation (every option of every query in one ``score()`` call)."""
    import math

    from pytest_emguard.backends.base import ContinuationScores, require

    who = f"{side} model ({ctx.config.model.backend} backend)"
    backend = require(getattr(ctx.models(), side), ContinuationScores, who)  # type: ignore[type-abstract]
    asked = [(prompt_of(q, ""), option) for q in queries for option in q.options]
    scores = backend.score([p for p, _ in asked], [o for _, o in asked])
    same_length(asked, scores, f"{side} backend score()")
    out: list[Record] = []
    at = 0
    for q in queries:
        mine, at = scores[at : at + len(q.options)], at + len(q.options)
        top = max(mine)
        weights = [math.exp(s - top) if math.isfinite(s) else 0.0 for s in mine]
        total = sum(weights)
        value = 100.0 * weights[0] / total if total > 0 else None
        out.append({"value": value, "mass": 1.0 if value is not None else 0.0})
    return out


def scale_reading(dist: Mapping[str, float], options: Sequence[str]) -> Record:
    """Mean and standard deviation of a rating over the option tokens ("0" ... "5"), renormalised over them; the
    probability they hold is the mass (under 0.25: unscorable, the judge's rule)."""
    from pytest_emguard.judge.scoring import token_probs

    mass = dict.fromkeys(options, 0.0)
    for token, p in token_probs(dist).items():
        key = token.strip()
        if key in mass:
            mass[key] += p
    total = sum(mass.values())
    if total < 0.25:
        return {"value": None, "mass": total, "spread": None}
    top = max(float(k) for k in options)
    mean = min(top, sum(float(k) * p for k, p in mass.items()) / total)  # no rounding past the top
    variance = sum((float(k) - mean) ** 2 * p for k, p in mass.items()) / total
    return {"value": mean, "mass": total, "spread": variance**0.5}


def letter_choice(dist: Mapping[str, float]) -> Record:
    """100 x P("A") / (P("A") + P("B")) from a next-token distribution (tokens " A" and "A" count alike)."""
    from pytest_emguard.judge.scoring import token_probs

    mass = {"A": 0.0, "B": 0.0}
    for token, p in token_probs(dist).items():
        letter = token.strip().upper().rstrip(").:")
        if letter in mass:
            mass[letter] += p
    total = mass["A"] + mass["B"]
    value = min(100.0, 100.0 * mass["A"] / total) if total >= 0.25 else None  # the judge's unscorable rule
    return {"value": value, "mass": total}


def reading_sample(record: Mapping[str, object]) -> Sample:
    """A reading's cache record as a ``Sample`` (its ``answer`` describes the reading)."""
    if "states" in record:
        activations = decode_states(record)
        return Sample(f"activations {getattr(activations, 'shape', '?')}", states=activations)
    value, mass, spread = record.get("value"), record.get("mass"), record.get("spread")
    reading = Reading(
        float(value) if isinstance(value, (int, float)) else None,
        float(mass or 0.0),  # type: ignore[arg-type]
        float(spread) if isinstance(spread, (int, float)) else None,
    )
    shown = "n/a" if reading.value is None else f"{reading.value:.1f}"
    return Sample(f"rating {shown} read from probabilities (P(number) {reading.mass:.2f})", reading=reading)
