"""The judge stage: a verdict on every sampled answer of a judged query, from the cache or from the judge in
batches (an empty answer is unscorable without asking it), and the caveats a judge's own health figures raise."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

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
    for key, (side, q, k, s) in zip(keys, slots, strict=True):
        records[side][q.key][k] = Sample(s.answer, Verdict.from_json(found[key])) if key in found else None


def judge_answers(ctx: RunContext, todo: dict[str, tuple[str, str]]) -> dict[str, Record]:
    """Verdicts of the judge on (question, answer) pairs by cache key, stored batch by batch."""
    empty: dict[str, Record] = {
        k: Verdict("unscorable", raw="empty answer").to_json() for k, (_, a) in todo.items() if not a.strip()
    }
    if empty:
        ctx.cache.put_many("verdict", empty)
    items = [(qa, k) for k, qa in todo.items() if k not in empty]
    if not items:
        ctx.stats.verdicts_computed += len(empty)
        return empty
    ctx.progress(f"judging {len(items)} answers")
    ctx.stats.judge_loaded = True
    started = time.monotonic()

    def make(chunk: list[tuple[tuple[str, str], str]]) -> dict[str, Record]:
        found = ctx.judge.judge([qa for qa, _ in chunk])
        same_length(chunk, found, "judge()")
        return {k: v.to_json() for (_, k), v in zip(chunk, found, strict=True)}

    def shown(done: int, total: int) -> None:
        ctx.tick("judge", f"judge: {done}/{total} verdicts, {time.monotonic() - started:.0f}s", done, total)

    size = max(ctx.config.options.batch_size, 32)
    done = cached_or_made(ctx, "verdict", items, make, size=size, shown=shown)
    ctx.stats.verdicts_computed += len(done) + len(empty)
    ctx.stats.timed("judge", started)
    return {**done, **empty}


def judge_caveats(judge: Judge, config: RunConfig) -> tuple[str, ...]:
    """Reasons to doubt the judge, from the health figures it measures (``Judge.measures``)."""
    figures = judge.measures()
    limit = config.thresholds.judge_limit()
    shift = figures.get("style_shift")
    if shift is not None and shift > limit:
        return (
            f"the judge is swayed by style: its score moves {shift:.1f} points on average when only an answer's "
            f"style changes (judge.max_style_shift {limit:g})",
        )
    return ()
