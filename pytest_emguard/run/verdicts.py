"""The judge stage: a verdict on every sampled answer of a judged query, from the cache or from the judge in
batches (an empty answer is unscorable without asking it), and the caveats a judge's own health figures raise."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from pytest_emguard.checks.base import Query
from pytest_emguard.config.run import RunConfig
from pytest_emguard.judge import Judge
from pytest_emguard.run.context import Record, RunContext, cached_or_made, same_length
from pytest_emguard.run.plan import verdict_key
from pytest_emguard.run.records import SIDES, Rows
from pytest_emguard.types import Sample, Verdict

__all__ = ["judge_answers", "judge_caveats", "verdicts"]


def verdicts(ctx: RunContext, records: dict[str, Rows], asked: Mapping[str, Sequence[Query]]) -> None:
    """Add the judge's verdict to each answer of a judged query in ``records`` (in place; None where the cache
    lacks it and nothing is computed)."""
    slots = [
        (side, q, k, sample)
        for side in SIDES
        for q in asked[side]
        if q.judged
        for k, sample in enumerate(records[side][q.key])
        if sample is not None
    ]
    keys = [verdict_key(ctx.judge.fingerprint, q.question, s.answer) for _, q, _, s in slots]
    found = ctx.cache.get_many(keys)
    ctx.stats.verdicts_cached += len(found)
    todo = {k: (q.question, s.answer) for k, (_, q, _, s) in zip(keys, slots, strict=True) if k not in found}
    if todo and ctx.compute:
        found.update(judge_answers(ctx, todo))
    blind = not coherence_usable(ctx.judge, ctx.config)
    for key, (side, q, k, s) in zip(keys, slots, strict=True):
        if key not in found:
            records[side][q.key][k] = None
            continue
        verdict = Verdict.from_json(found[key])
        records[side][q.key][k] = Sample(s.answer, replace(verdict, coherence=None) if blind else verdict)


def coherence_usable(judge: Judge, config: RunConfig) -> bool:
    """Whether the items may use the judge's coherence reading: not where the judge's own coherence agreement
    with labelled real answers is below ``judge.min_coherence_agreement`` (an instrument that fails its check
    does not gate; the items then count every scored answer coherent and say so)."""
    agreement = judge.measures().get("coherence_agreement")
    return agreement is None or agreement >= config.thresholds.judge_block()["min_coherence_agreement"]


def judge_answers(
    ctx: RunContext, todo: dict[str, tuple[str, str]], judge: Judge | None = None, who: str = "judge"
) -> dict[str, Record]:
    """Verdicts of the judge (or of ``judge``, a second judge named ``who`` in the progress lines) on (question,
    answer) pairs by cache key, stored batch by batch."""
    judge = ctx.judge if judge is None else judge
    empty: dict[str, Record] = {
        k: Verdict("unscorable", raw="empty answer").to_json() for k, (_, a) in todo.items() if not a.strip()
    }
    if empty:
        ctx.cache.put_many("verdict", empty)
    items = [(qa, k) for k, qa in todo.items() if k not in empty]
    if not items:
        ctx.stats.verdicts_computed += len(empty)
        return empty
    ctx.progress(f"{'' if who == 'judge' else who + ': '}judging {len(items)} answers")
    ctx.stats.judge_loaded = True
    started = time.monotonic()

    def make(chunk: list[tuple[tuple[str, str], str]]) -> dict[str, Record]:
        found = judge.judge([qa for qa, _ in chunk])
        same_length(chunk, found, "judge()")
        return {k: v.to_json() for (_, k), v in zip(chunk, found, strict=True)}

    def shown(done: int, total: int) -> None:
        ctx.tick(who, f"{who}: {done}/{total} verdicts, {time.monotonic() - started:.0f}s", done, total)

    size = max(ctx.config.options.batch_size, 32)
    try:
        done = cached_or_made(ctx, "verdict", items, make, size=size, shown=shown)
    finally:
        judge.release()
    ctx.stats.verdicts_computed += len(done) + len(empty)
    ctx.stats.timed("judge", started)
    return {**done, **empty}


def judge_caveats(judge: Judge, config: RunConfig) -> tuple[str, ...]:
    """Reasons to doubt the judge, from the health figures it measures (``Judge.measures``) against the
    thresholds' ``judge:`` block."""
    return health_problems(judge.measures(), config.thresholds.judge_block())


HEALTH_LIMITS = (  # figure, its limit in the judge block, the direction, what it means
    ("style_shift", "max_style_shift", "above", "its score moves {v:.1f} points on average when only an answer's style changes"),
    ("real_fpr", "max_real_fpr", "above", "it scores {v:.0%} of real answers labelled harmless as harmful"),
    ("injection_shift", "max_injection_shift", "above", "its score moves {v:.1f} points on average when an answer tells the grader what to score"),
    ("coherence_agreement", "min_coherence_agreement", "below", "its coherence reading agrees with the readers on {v:.0%} of real answers, so no item uses it"),
)  # fmt: skip


def health_problems(figures: dict[str, float], limits: dict[str, float]) -> tuple[str, ...]:
    """One line per health figure beyond its limit (figures a judge does not measure are not held against it)."""
    out = []
    for name, key, side, text in HEALTH_LIMITS:
        value, limit = figures.get(name), limits[key]
        if value is None or not (value > limit if side == "above" else value < limit):
            continue
        shown = f"{limit:.0%}" if key in ("max_real_fpr", "min_coherence_agreement") else f"{limit:g}"
        out.append(f"the judge is not healthy: {text.format(v=value)} (judge.{key} {shown})")
    return tuple(out)
