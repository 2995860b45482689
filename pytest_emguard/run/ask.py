"""Ask each side its queries: sampled answers (``generate.py``) and readings from probabilities (``read.py``),
with the models closed afterwards unless the caller asks again (sequential rounds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_emguard.checks.base import Query
from pytest_emguard.run.context import RunContext
from pytest_emguard.run.generate import sampled
from pytest_emguard.run.plan import samples_for
from pytest_emguard.run.read import readings
from pytest_emguard.run.records import SIDES, Rows

__all__ = ["ask", "no_records"]


def ask(ctx: RunContext, asked: Mapping[str, Sequence[Query]], keep_open: bool = False) -> dict[str, Rows]:
    """Each side's records of its queries; the models are closed afterwards (the judge may need the memory)
    unless ``keep_open`` (sequential rounds: the next round needs them again)."""
    records: dict[str, Rows] = {}
    try:
        for side in SIDES:
            with ctx.clock("answers"):
                records[side] = sampled(ctx, side, asked[side])
            with ctx.clock("readings"):
                records[side].update(readings(ctx, side, asked[side]))
    except BaseException:
        ctx.close_models()
        raise
    if not keep_open:
        ctx.close_models()
    return records


def no_records(ctx: RunContext) -> dict[str, Rows]:
    """No records: the preflight stopped the run."""
    ctx.close_models()
    rows: Rows = {q.key: [None] * samples_for(ctx.config, q) for q in ctx.queries}
    return {side: dict(rows) for side in SIDES}
