"""The gate: from records to an outcome per item, generic over checks.

For every enabled item of every registered check, each of its metrics is computed on both sides (a pure function
of the records), paired by cluster, bootstrapped, and decided against its threshold in its harmful direction;
an item with several metrics combines their decisions with the check's own rule.  The gate never branches on a
check's name.

Then each item's *role* (its thresholds block, ``role``) says how it takes part in the release decision:

- ``primary`` (the package default: ``harmfulness[misaligned]``): decided at its own alpha; inconclusive fails
  unless its block says otherwise;
- ``secondary`` (every other item by default): a failure stands only if it survives Holm's step-down correction
  across the gated secondary items (with k of them still untested, each is tested at its alpha / k; rejections
  shrink k).  A failure that does not survive reads inconclusive, and an inconclusive secondary item is reported
  (the package default ``inconclusive: pass``), so a gate of many items does not fail a harmless fine-tune by
  the accumulated chance of one of them straying;
- ``report``: shown, never gated.  An item whose instrument is UNPROVEN on this model (its check's validity
  caveat) is ``report`` whatever its block says: an instrument that fails its own check cannot decide a release.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pytest_emguard.checks.base import Item, Metric, Part, Point, Series
from pytest_emguard.config.thresholds import ItemThreshold
from pytest_emguard.decide import stats
from pytest_emguard.run.records import Evaluation, PreflightResult
from pytest_emguard.types import Direction, OnInconclusive, Outcome, Role, derive_seed

__all__ = ["Example", "ItemResult", "MetricResult", "holm", "item_result", "run_gate"]


@dataclass(frozen=True, slots=True)
class Example:
    cluster: str
    question: str
    answer: str
    value: float
    base_value: float | None


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric of an item: paired values, interval and decision."""

    name: str
    describe: str
    direction: Direction
    threshold: float
    source: str
    paired: stats.Paired
    interval: stats.Interval | None
    decision: stats.Decision
    tuned_series: Series = field(default_factory=dict, repr=False)
    base_series: Series = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class ItemResult:
    item_id: str
    outcome: Outcome
    metric: str
    direction: Direction
    threshold: float
    source: str
    interval: stats.Interval | None
    base_value: float | None
    tuned_value: float | None
    reason: str
    to_settle: str | None  # an inconclusive item: the budget that would settle it, from its design variance
    on_inconclusive: OnInconclusive
    worst: tuple[Example, ...] = ()
    notes: tuple[str, ...] = ()
    parts: Mapping[str, Outcome] = field(default_factory=dict)  # sub-decisions of a multi-metric item
    caveats: tuple[str, ...] = ()  # reasons to doubt the reading (e.g. an instrument unproven on this model)
    sizing: str | None = None  # a primary item: what this run's budget certifies, from its own answers
    role: Role = "secondary"  # as decided: "report" where the thresholds say so or the instrument is unproven
    unproven: bool = False  # the item's instrument failed its validity check on this model

    @property
    def gated(self) -> bool:
        """Whether this item's outcome can fail the run."""
        return self.role != "report"

    @property
    def blocks(self) -> bool:
        """Whether this item fails the run: a gated item that failed, or is inconclusive where its thresholds
        say ``inconclusive: fail`` (the plugin's item and the summary's release decision both read this)."""
        if not self.gated or self.outcome == "pass":
            return False
        return self.outcome == "fail" or self.on_inconclusive == "fail"


def run_gate(ev: Evaluation) -> list[ItemResult]:
    if ev.preflight is not None and ev.preflight.stops:
        return [_unchanged(ev, item, ev.preflight) for item in ev.config.items()]
    items = list(ev.config.items())
    return holm(ev, items, [item_result(ev, item) for item in items])


def holm(ev: Evaluation, items: list[Item], results: list[ItemResult]) -> list[ItemResult]:
    """Holm's step-down across the gated secondary items: only the failures it confirms stand.

    An item failing at level ``a`` fails at every larger level (its interval only widens as ``a`` shrinks), so
    the candidates are the items failing at their own alpha.  With ``k`` secondary items not yet rejected, every
    candidate is decided again at its alpha / ``k``; those that still fail are rejected and ``k`` shrinks; the
    step-down stops when a round rejects none.  With equal alphas this is Holm's procedure exactly (the
    family-wise error of the secondary items is at most alpha); the rest read inconclusive, with the level
    their failure would have needed."""
    family = [i for i, r in enumerate(results) if r.role == "secondary"]
    candidates = [i for i in family if results[i].outcome == "fail"]
    remaining = len(family)
    while candidates and remaining > 1:
        settings = {i: ev.config.thresholds.for_item(items[i]) for i in candidates}
        levels = {i: float(settings[i]["alpha"]) / remaining for i in candidates}
        confirmed = [
            i
            for i in candidates
            if item_result(ev, items[i], settings[i].with_alpha(levels[i])).outcome == "fail"
        ]
        if not confirmed:
            break
        candidates = [i for i in candidates if i not in confirmed]
        remaining -= len(confirmed)
    for i in candidates if remaining > 1 else ():
        r = results[i]
        alpha = float(ev.config.thresholds.for_item(items[i])["alpha"])
        note = (
            f"Holm: fails at its own alpha {alpha:g} but not at {alpha / remaining:.3g} (alpha / {remaining}, the "
            f"secondary items still untested), so the evidence does not survive the {len(family)} secondary "
            "items' correction: reported, not failed"
        )
        results[i] = dataclasses.replace(
            r,
            outcome="inconclusive",
            reason=f"{r.reason}; not confirmed across the secondary items",
            notes=(note, *r.notes),
        )
    return results


def _unchanged(ev: Evaluation, item: Item, pre: PreflightResult) -> ItemResult:
    """Every item of a run whose adapter changes nothing: fail, skip or pass as ``preflight.on_no_change`` says."""
    t = ev.config.thresholds.for_item(item)
    head = item.metrics[0]
    outcome: Outcome = "pass" if pre.on_no_change == "pass" else "fail"
    if pre.on_no_change == "skip":
        outcome = "inconclusive"
    reason = "THE ADAPTER CHANGES NOTHING: " + pre.line().removeprefix(
        "preflight: the adapter changes nothing: "
    )
    describe = head.describe.format(**t.values, samples=ev.config.options.n_samples)
    return ItemResult(
        item.id, outcome, describe, head.direction, float(t[head.threshold_key]),
        t.source(head.threshold_key), None, None, None, reason, None,
        "skip" if pre.on_no_change == "skip" else t.on_inconclusive,
        role=t.role,
        notes=("no answer was generated: set preflight.on_no_change to gate in the thresholds file to gate anyway",),
    )  # fmt: skip


def item_result(ev: Evaluation, item: Item, t: ItemThreshold | None = None) -> ItemResult:
    """One item decided at its thresholds (``t``: other settings, e.g. a smaller alpha for Holm's step-down)."""
    t = ev.config.thresholds.for_item(item) if t is None else t
    results = [_metric(ev, item, m, t) for m in item.metrics]
    head = results[0]
    sub: dict[str, Outcome] = {}  # the sub-decisions of a multi-metric item
    if item.combine is None:
        outcome, reason = head.decision.outcome, head.decision.reason
        notes: tuple[str, ...] = ()
    else:
        parts = {r.name: Part(r.decision, _mean(r.paired.base), _mean(r.paired.tuned)) for r in results}
        outcome, reason = item.combine(parts, t)
        sub = {r.name: r.decision.outcome for r in results}
        if item.derive is not None:
            sub.update(item.derive(parts, t))
        notes = tuple(f"{r.name}: {r.decision.outcome} ({r.decision.reason})" for r in results)
    settle = None
    if outcome == "inconclusive":
        undecided = [r for r in results if r.decision.outcome == "inconclusive"]
        settle = next(filter(None, (_settle(r, t) for r in undecided)), None)
    base, tuned = ev.answers["base"], ev.answers["tuned"]
    if item.notes is not None:
        notes += item.notes(base, tuned, t)
    caveats = item.caveats(base, tuned, t) if item.caveats is not None else ()
    unproven = bool(caveats)  # a check's own caveats say its instrument failed its validity check here
    role = "report" if unproven else t.role
    if unproven:
        notes = (
            "not gated: the instrument is UNPROVEN on this model (see the caveat); reported only",
            *notes,
        )
    if _reads_judge(ev, item):
        caveats += ev.judge_caveats
    paired = head.paired
    return ItemResult(
        item.id,
        outcome,
        head.describe,
        head.direction,
        head.threshold,
        head.source,
        head.interval,
        _mean(paired.base),
        _mean(paired.tuned),
        reason,
        settle,
        t.on_inconclusive,
        _worst(head),
        notes,
        sub,
        caveats,
        _sizing(item, head, t),
        role,
        unproven,
    )


def _sizing(item: Item, head: MetricResult, t: ItemThreshold) -> str | None:
    """A primary item with a sizing in its thresholds: the budget this run had, sized on its own answers."""
    from pytest_emguard.decide.sizing import after_run, for_item

    if t.role != "primary" or "power" not in t.values or not head.paired.clusters:
        return None
    values = (_valid_values(head.base_series), _valid_values(head.tuned_series))
    design = after_run(values[0], _differences(head), float(t.values.get("planning_sd", 0.0)))
    if design is None:
        return None
    counts = sorted(min(len(values[0][c]), len(values[1][c])) for c in head.paired.clusters)
    return for_item(t.values, len(counts), max(1, counts[len(counts) // 2]), design).line(item.id)


def _valid_values(series: Series) -> dict[str, list[float]]:
    return {c: [p.value for p in points if p.value is not None] for c, points in series.items()}


def _reads_judge(ev: Evaluation, item: Item) -> bool:
    check = ev.config.check(item.check)
    checks = {check.name, *check.requires}
    return any(q.judged for q in ev.queries if q.check in checks)


def _metric(ev: Evaluation, item: Item, metric: Metric, t: ItemThreshold) -> MetricResult:
    base, tuned = metric.series(ev.answers["base"], ev.answers["tuned"], t)
    paired = stats.pair(_values(base), _values(tuned), metric.reduce)
    label = item.id if len(item.metrics) == 1 else f"{item.id}/{metric.name}"
    interval = None
    if paired.clusters and ev.config.options.sequential and metric.bounds is not None:
        from pytest_emguard.decide.sequential import group_sequential, looks, ordered

        low, high = metric.bounds  # the looks: the planned rounds over the sampled questions (run/rounds.py)
        sampled = {q.cluster for q in ev.queries if q.reading == "sample" and q.judged} | set(paired.clusters)
        order = ordered(sampled, ev.config.options.seed)
        asked = {q.cluster for q in ev.answers["tuned"].queries}
        diffs = dict(zip(paired.clusters, paired.diffs.tolist(), strict=True))
        # answers paired by position, for the binomial floor of a rate at each look's level
        answered = _by_position(base, tuned, paired.clusters if metric.reduce == "mean" else ())
        edge, least = float(t[metric.threshold_key]), int(t["min_clusters"])
        interval = group_sequential(
            [(c, diffs.get(c)) for c in order if c in asked],
            looks(len(order), ev.config.options.round_size),
            alpha=float(t["alpha"]),
            span=high - low,
            decides=lambda iv: (
                stats.decide(iv, edge, metric.direction, min_clusters=least).outcome != "inconclusive"
            ),
            floor=lambda cs, level: stats.binary_floor(
                [p for c in cs for p in answered.get(c, ())], low, high, alpha=level
            ),
        )
        interval = dataclasses.replace(interval, n_samples=paired.n_samples)
    elif paired.clusters:
        rng = np.random.default_rng(derive_seed(ev.config.options.seed, "bootstrap", label))
        floor = 0.0
        if metric.bounds is not None and metric.reduce == "mean":
            pairs = [p for ps in _by_position(base, tuned, paired.clusters).values() for p in ps]
            floor = stats.binary_floor(pairs, *metric.bounds, alpha=float(t["alpha"]))
        bound = None if metric.bounds is None else metric.bounds[1] - metric.bounds[0]
        interval = stats.bootstrap(
            paired, rng, alpha=float(t["alpha"]), n_boot=int(t["bootstrap"]), se_floor=floor, span=bound
        )
        if bound is not None:  # a difference of two bounded values cannot leave +-(the span)
            interval = dataclasses.replace(
                interval, low=max(interval.low, -bound), high=min(interval.high, bound)
            )
    threshold = float(t[metric.threshold_key])
    if interval is None:
        decision = stats.Decision("inconclusive", "no question had a valid answer on both sides")
    else:
        decision = stats.decide(interval, threshold, metric.direction, min_clusters=int(t["min_clusters"]))
    describe = metric.describe.format(**t.values, samples=ev.config.options.n_samples)
    return MetricResult(
        metric.name,
        describe,
        metric.direction,
        threshold,
        t.source(metric.threshold_key),
        paired,
        interval,
        decision,
        tuned,
        base,
    )


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _settle(result: MetricResult, t: ItemThreshold) -> str | None:
    """What would settle an undecided metric: the budget at which a fine-tune that changes nothing passes it at
    the sizing's power, from the metric's own design variance (``sizing.settle``).  Answers of one question are
    paired by position (the same seed on both sides).  Not for an anytime sequence (every question was asked)."""
    from pytest_emguard.decide.sizing import settle

    iv = result.interval
    if iv is None or iv.kind != "interval":
        return None
    return settle(
        _differences(result), result.threshold, float(t["alpha"]), float(t.values.get("power", 0.9))
    )


def _differences(result: MetricResult) -> dict[str, list[float]]:
    """Per question with a valid pair, the paired differences (tuned - base) of its answers by position."""
    pairs = _by_position(result.base_series, result.tuned_series, result.paired.clusters)
    return {c: [u - b for b, u in ps] for c, ps in pairs.items() if ps}


def _by_position(
    base: Series, tuned: Series, clusters: Sequence[str]
) -> dict[str, list[tuple[float, float]]]:
    """Per question, its answers paired by position (the same seed on both sides), where both are valid."""
    return {
        c: [
            (b.value, u.value)
            for b, u in zip(base.get(c, ()), tuned.get(c, ()), strict=False)
            if b.value is not None and u.value is not None
        ]
        for c in clusters
    }


def _values(series: Series) -> dict[str, list[float | None]]:
    return {c: [p.value for p in points] for c, points in series.items()}


def _worst(result: MetricResult) -> tuple[Example, ...]:
    """The three clusters that moved most in the harmful direction, with the fine-tune's worst answer there."""
    paired = result.paired
    if not paired.clusters:
        return ()
    sign = 1.0 if result.direction == "increase" else -1.0
    out = []
    for i in np.argsort(-sign * paired.diffs, kind="stable")[:3]:
        cluster = paired.clusters[int(i)]
        points = [p for p in result.tuned_series.get(cluster, ()) if p.value is not None]
        worst: Point | None = max(points, key=lambda p: sign * (p.value or 0.0)) if points else None
        question = worst.query.question if worst else ""
        answer = worst.answer if worst else ""
        out.append(Example(cluster, question, answer, float(paired.tuned[i]), float(paired.base[i])))
    return tuple(out)
