"""Sampled answers (``reading == "sample"``): each side's answers from the cache, the misses generated in batches
(shortest prompts first), stored batch by batch; a backend that fails mid-batch keeps what it finished
(``PartialBatch``).  Progress per batch with an ETA over the token budget, and once a run a time estimate of the
plan from the first batch."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from pytest_emguard.backends.base import PartialBatch
from pytest_emguard.checks.base import Query
from pytest_emguard.run.context import Record, RunContext, by_check, cached_or_made, same_length
from pytest_emguard.run.plan import answer_key, samples_for
from pytest_emguard.run.records import Rows
from pytest_emguard.types import Completion, Request, Sample

__all__ = ["sampled"]


def sampled(ctx: RunContext, side: str, queries: Sequence[Query]) -> Rows:
    """``side``'s answers to the sampled ``queries`` (None where the cache lacks one and nothing is computed)."""
    seed, fp = ctx.config.options.seed, ctx.fingerprints[side]
    jobs = [
        (query, request, answer_key(fp, query, request))
        for query in queries
        if query.reading == "sample"
        for request in query.requests(samples_for(ctx.config, query), seed)
    ]
    found = ctx.cache.get_many(key for _, _, key in jobs)
    ctx.stats.records_cached += len(found)
    missing = [(r, k) for _, r, k in jobs if k not in found]
    if missing and ctx.compute:
        for check, group in by_check(missing, lambda rk: rk[0].tags.get("check", "")):
            started = time.monotonic()
            found.update(_generate(ctx, side, group))
            ctx.stats.timed(check, started)
    out: Rows = {q.key: [None] * samples_for(ctx.config, q) for q in queries if q.reading == "sample"}
    for query, request, key in jobs:
        out[query.key][request.sample] = Sample(str(found[key]["text"])) if key in found else None
    return out


def _generate(ctx: RunContext, side: str, missing: list[tuple[Request, str]]) -> dict[str, Record]:
    backend = getattr(ctx.models(), side)
    ordered = sorted(missing, key=lambda rk: (rk[0].sampling.max_new_tokens, len(json.dumps(rk[0].messages))))
    started = time.monotonic()
    tokens, budget = [0], [0, sum(r.sampling.max_new_tokens for r, _ in ordered)]
    what = ordered[0][0].tags.get("check", "")
    ctx.progress(
        f"{side}: generating {len(ordered)} answers ({what}; {ctx.stats.records_cached} in the cache)"
    )

    def make(chunk: list[tuple[Request, str]]) -> dict[str, Record]:
        try:
            completions: Sequence[Completion] = backend.generate([r for r, _ in chunk])
        except PartialBatch as partial:  # keep what finished before reporting the failure
            kept = {chunk[i][1]: _answer_record(c) for i, c in partial.done.items()}
            ctx.cache.put_many("answer", kept)
            ctx.stats.records_made += len(kept)
            ctx.stats.answers_made += len(kept)
            raise
        same_length(chunk, completions, f"{side} backend generate()")
        ctx.stats.records_made += len(chunk)
        ctx.stats.answers_made += len(chunk)
        tokens[0] += sum(c.n_tokens for c in completions)
        budget[0] += sum(r.sampling.max_new_tokens for r, _ in chunk)
        if ctx.to_generate > len(chunk):  # the first batch of the run is the warm-up
            _estimate(ctx, len(chunk), time.monotonic() - started)
        return {k: _answer_record(c) for (_, k), c in zip(chunk, completions, strict=True)}

    def shown(done: int, total: int) -> None:
        """ETA from the share of the token budget (max_new_tokens) done, not the share of requests."""
        elapsed = max(time.monotonic() - started, 1e-6)
        share = budget[0] / budget[1]
        eta = elapsed / max(share, 1e-6) * (1.0 - share)
        rate = tokens[0] / elapsed
        line = f"{side}: {done}/{total} answers, {rate:.0f} tok/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
        ctx.tick(f"{side} answers", line, done, total)

    return cached_or_made(ctx, "answer", ordered, make, size=ctx.config.options.batch_size, shown=shown)


def _estimate(ctx: RunContext, answers: int, seconds: float) -> None:
    """Once a run: the time the plan's answers take at the first batch's rate."""
    total = ctx.to_generate
    ctx.to_generate = 0
    minutes = seconds / answers * total / 60
    ctx.progress(
        f"time: the first batch made {answers} answers in {seconds:.1f}s (model load not counted); at that "
        f"rate the plan's {total} answers take about {minutes:.1f} min (readings, follow-ups and the judge "
        "come on top; the first batch holds the shortest prompts, so this errs low)"
    )


def _answer_record(c: Completion) -> Record:
    return {"text": c.text, "n_tokens": c.n_tokens, "finish": c.finish}
