"""The plan of a run: every query of the planned checks (``plan_queries``), how many answers each gets
(``samples_for``), and the cache key of each record a query yields (an answer, a reading, a verdict)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_emguard.cache import cache_key
from pytest_emguard.checks.base import Query
from pytest_emguard.types import Request

if TYPE_CHECKING:
    from pytest_emguard.config.run import RunConfig

__all__ = ["MIN_BRANCH", "TOP_K", "answer_key", "plan_queries", "reading_key", "samples_for", "verdict_key"]

TOP_K = 20  # next-token log-probabilities read per step of a digit tree
MIN_BRANCH = (
    1e-3  # digit prefixes less likely than this are not expanded (moves a rating by < 0.1 point each)
)


def plan_queries(config: RunConfig) -> tuple[Query, ...]:
    """Every query of the checks that have an enabled item, and of the checks they require."""
    context = config.plan_context
    return tuple(q for c in config.planned_checks() for q in c.queries(context))


def samples_for(config: RunConfig, query: Query) -> int:
    """One for a reading from probabilities (it is exact, not sampled); else --em-samples when given, else the
    query's own count (a bank's samples_per_paraphrase), else 10."""
    if query.reading != "sample":
        return 1
    given = config.options.samples
    return given if given is not None else query.n_samples(config.options.n_samples)


def answer_key(fingerprint: str, query: Query, request: Request) -> str:
    fields: dict[str, object] = {"backend": fingerprint, "check": query.check, "version": query.version}
    if query.bank_sha256 is not None:
        fields["bank"] = query.bank_sha256
    return cache_key("answer", {**fields, **request.key_fields()})


def reading_key(fingerprint: str, query: Query) -> str:
    fields: dict[str, object] = {"backend": fingerprint, "check": query.check}
    fields.update(version=query.version, reading=query.reading, prefix=query.prefix, top_k=TOP_K)
    fields["min_branch"] = MIN_BRANCH
    fields["messages"] = [list(m) for m in query.messages]
    if query.options:
        fields["options"] = list(query.options)
    if query.stride:
        fields["stride"] = query.stride
    if query.bank_sha256 is not None:
        fields["bank"] = query.bank_sha256
    return cache_key("reading", fields)


def verdict_key(judge_fingerprint: str, question: str, answer: str) -> str:
    return cache_key("verdict", {"judge": judge_fingerprint, "q": question, "a": answer})
