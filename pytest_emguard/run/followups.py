"""Follow-up queries: what checks build from each side's own first-round answers (``Check.followups``: e.g. a
self-rating asked right after the model's answer; which of two answers it wrote).  They are asked of that side
only, after the first round is answered and judged, and cached like any query."""

from __future__ import annotations

from pytest_emguard.checks.base import Answers, Query
from pytest_emguard.run.context import RunContext
from pytest_emguard.run.records import SIDES, Rows

__all__ = ["followups"]


def followups(ctx: RunContext, records: dict[str, Rows]) -> dict[str, tuple[Query, ...]]:
    """Each side's follow-up queries, built from its own records and the other side's."""
    context = ctx.config.plan_context
    out: dict[str, tuple[Query, ...]] = {}
    for side, other in zip(SIDES, reversed(SIDES), strict=True):
        own, theirs = Answers(ctx.queries, records[side]), Answers(ctx.queries, records[other])
        out[side] = tuple(
            q for check in ctx.config.planned_checks() for q in check.followups(context, own, theirs)
        )
    return out
