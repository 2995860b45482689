"""``--em-sequential``: every query but the sampled, judged ones first; then those, question by question in the
seeded order, ``--em-round-size`` questions a round, until every enabled item whose metrics may stop
(``Metric.bounds``) is decided, or the questions run out.  The rounds are the looks of a group-sequential design
planned before the first of them (``decide/sequential.py``): the gate reads each item's interval at the critical
value of the look reached, so stopping early does not raise the error rate."""

from __future__ import annotations

from pytest_emguard.checks.base import Answers, Query
from pytest_emguard.run.ask import ask
from pytest_emguard.run.context import RunContext
from pytest_emguard.run.records import SIDES, Evaluation, PreflightResult, Rows
from pytest_emguard.run.verdicts import verdicts

__all__ = ["in_rounds"]


def _in_round(q: Query) -> bool:
    return q.reading == "sample" and q.judged


def in_rounds(
    ctx: RunContext, asked: dict[str, tuple[Query, ...]], preflight: PreflightResult
) -> tuple[dict[str, tuple[Query, ...]], dict[str, Rows]]:
    """The queries asked of each side and their records, round by round until every stoppable item is decided."""
    from pytest_emguard.decide.gate import item_result
    from pytest_emguard.decide.sequential import design_line, looks, ordered, rounds

    items = [i for i in ctx.config.items() if all(m.bounds is not None for m in i.metrics)]
    later = [q for q in ctx.queries if _in_round(q)]
    if not items or not later:
        answers = ask(ctx, asked)
        verdicts(ctx, answers, asked)
        return asked, answers
    now = {side: tuple(q for q in asked[side] if not _in_round(q)) for side in SIDES}
    answers = ask(ctx, now, keep_open=True) if any(now.values()) else {side: {} for side in SIDES}
    verdicts(ctx, answers, now)
    plan = rounds(ordered((q.cluster for q in later), ctx.config.options.seed), ctx.config.options.round_size)
    total = sum(len(r) for r in plan)
    for alpha in sorted({float(ctx.config.thresholds.for_item(i)["alpha"]) for i in items}):
        ctx.progress(design_line(looks(total, ctx.config.options.round_size), alpha))
    asked_so_far = dict(now)
    for number, clusters in enumerate(plan, 1):
        wanted = set(clusters)
        step = {side: tuple(q for q in later if q.cluster in wanted) for side in SIDES}
        more = ask(ctx, step, keep_open=True)
        verdicts(ctx, more, step)
        for side in SIDES:
            answers[side].update(more[side])
            asked_so_far[side] = asked_so_far[side] + step[side]
        sides = {side: Answers(asked_so_far[side], answers[side]) for side in SIDES}
        ev = Evaluation(ctx.config, ctx.queries, sides, ctx.fingerprints, ctx.judge.fingerprint, (), ctx.stats, preflight)  # fmt: skip
        outcomes = {i.id: item_result(ev, i).outcome for i in items}
        undecided = [name for name, outcome in outcomes.items() if outcome == "inconclusive"]
        done = sum(len(r) for r in plan[:number])
        ctx.progress(
            f"sequential: round {number} of {len(plan)}, {done} of {total} questions: "
            + (
                f"{len(undecided)} item(s) undecided ({', '.join(undecided)})"
                if undecided
                else "every item decided"
            )
        )
        if not undecided:
            break
    ctx.close_models()
    ctx.stats.sequential = (number, len(plan), done, total)
    return asked_so_far, answers
