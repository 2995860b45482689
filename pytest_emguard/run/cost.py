"""The cost preflight: before anything is generated, what the first round of the plan needs (requests, tokens,
cache hits), what it would cost where prices are given, and ``--em-budget``, which refuses a plan over budget.

Tokens are estimated without a tokenizer (4 characters a token; an answer counts its ``max_new_tokens``, the most
it may take), so the estimate errs high.  Follow-up questions, which checks build from the first round's answers
(recognition, score prediction, the self-rating after each answer), are not known yet and come on top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_emguard.config.budget import parse_budget, parse_price

if TYPE_CHECKING:
    from pytest_emguard.checks.base import Query
    from pytest_emguard.run.context import RunContext

__all__ = ["Estimate", "cost_preflight", "planned_sizing", "prompt_tokens"]

CHARS_PER_TOKEN = 4


def prompt_tokens(messages: Iterable[tuple[str, str]], prefix: str = "") -> int:
    """A generous estimate: 4 characters a token, and 4 tokens of chat markup a message."""
    return sum(len(text) // CHARS_PER_TOKEN + 4 for _, text in messages) + len(prefix) // CHARS_PER_TOKEN + 1


@dataclass(slots=True)
class Estimate:
    """Counts over both sides of the first round."""

    answers: int = 0  # sampled answers the plan asks for
    answers_cached: int = 0
    readings: int = 0  # readings from probabilities or activations (one forward pass or a few short requests)
    readings_cached: int = 0
    input_tokens: int = 0  # estimated prompt tokens of what is not cached
    output_tokens: int = 0  # at most: max_new_tokens of each answer not cached, plus a token a reading

    def add_answers(self, wanted: int, cached: int, input_tokens: int, output_tokens: int) -> None:
        self.answers += wanted
        self.answers_cached += cached
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def add_readings(self, wanted: int, cached: int, input_tokens: int) -> None:
        self.readings += wanted
        self.readings_cached += cached
        self.input_tokens += input_tokens
        self.output_tokens += wanted - cached

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def cost(self, price: tuple[float, float] | None) -> float | None:
        """USD at ``price`` (per million input tokens, per million output tokens)."""
        if price is None:
            return None
        return (self.input_tokens * price[0] + self.output_tokens * price[1]) / 1e6

    def line(self, price: tuple[float, float] | None = None) -> str:
        new_answers = self.answers - self.answers_cached
        new_readings = self.readings - self.readings_cached
        text = (
            f"plan: {self.answers} answers ({self.answers_cached} cached, {new_answers} to generate), "
            f"{self.readings} readings ({self.readings_cached} cached, {new_readings} to read); "
            f"about {self.input_tokens:,} prompt tokens and at most {self.output_tokens:,} new tokens to send "
            f"(first round; follow-ups come on top)"
        )
        cost = self.cost(price)
        if cost is not None:
            text += f"; estimated API cost ${cost:.2f}"
        return text


def cost_preflight(ctx: RunContext, asked: Mapping[str, Sequence[Query]]) -> None:
    """What the first round needs and what the cache holds, shown before anything is generated; a plan over
    ``--em-budget`` stops here."""
    from pytest_emguard.run.plan import answer_key, reading_key, samples_for
    from pytest_emguard.run.records import SIDES

    plan, seed = Estimate(), ctx.config.options.seed
    for side in SIDES:
        fp = ctx.fingerprints[side]
        jobs = [
            (request, answer_key(fp, q, request))
            for q in asked[side]
            if q.reading == "sample"
            for request in q.requests(samples_for(ctx.config, q), seed)
        ]
        found = ctx.cache.get_many(k for _, k in jobs)
        todo = [r for r, k in jobs if k not in found]
        plan.add_answers(
            len(jobs),
            len(found),
            sum(prompt_tokens(r.messages) for r in todo),
            sum(r.sampling.max_new_tokens for r in todo),
        )
        wanted = [(q, reading_key(fp, q)) for q in asked[side] if q.reading != "sample"]
        held = ctx.cache.get_many(k for _, k in wanted)
        plan.add_readings(
            len(wanted),
            len(held),
            sum(prompt_tokens(q.messages, q.prefix) for q, k in wanted if k not in held),
        )
    ctx.to_generate = plan.answers - plan.answers_cached
    price = parse_price(ctx.config.options.price)
    if plan.answers > plan.answers_cached or plan.readings > plan.readings_cached:
        ctx.progress(plan.line(price))
    parse_budget(ctx.config.options.budget).check(plan, price)


def planned_sizing(ctx: RunContext) -> list[str]:
    """Before any answer: for each primary item whose thresholds carry a sizing (``power``, ``planning_share``,
    ``planning_sd``), whether this run's questions and answers can certify its margin (``decide/sizing.py``)."""
    from pytest_emguard.decide.sizing import for_item, planning
    from pytest_emguard.run.plan import samples_for

    lines = []
    for item in ctx.config.items():
        t = ctx.config.thresholds.for_item(item)
        if t.role != "primary" or not {"power", "planning_share", "planning_sd"} <= set(t.values):
            continue
        per_question: dict[str, int] = {}
        for q in ctx.queries:
            if q.check == item.check and q.reading == "sample" and q.tags.get("in_domain") != "yes":
                per_question[q.cluster] = per_question.get(q.cluster, 0) + samples_for(ctx.config, q)
        if not per_question:
            continue
        answers = sorted(per_question.values())[len(per_question) // 2]
        design = planning(float(t["planning_share"]), float(t["planning_sd"]))
        lines.append(for_item(t.values, len(per_question), answers, design).line(item.id))
    return lines
