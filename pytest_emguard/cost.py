"""The cost preflight: before anything is generated, what the first round of the plan needs (requests, tokens,
cache hits), what it would cost where prices are given, and ``--em-budget``, which refuses a plan over budget.

Tokens are estimated without a tokenizer (4 characters a token; an answer counts its ``max_new_tokens``, the most
it may take), so the estimate errs high.  Follow-up questions, which checks build from the first round's answers
(recognition, score prediction, the self-rating after each answer), are not known yet and come on top.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pytest_emguard.errors import ConfigError

__all__ = ["Budget", "Plan", "parse_budget", "parse_price"]

CHARS_PER_TOKEN = 4


def prompt_tokens(messages: Iterable[tuple[str, str]], prefix: str = "") -> int:
    """A generous estimate: 4 characters a token, and 4 tokens of chat markup a message."""
    return sum(len(text) // CHARS_PER_TOKEN + 4 for _, text in messages) + len(prefix) // CHARS_PER_TOKEN + 1


@dataclass(slots=True)
class Plan:
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


@dataclass(frozen=True, slots=True)
class Budget:
    tokens: int | None = None  # prompt + new tokens
    usd: float | None = None

    def check(self, plan: Plan, price: tuple[float, float] | None) -> None:
        """Raise when the plan's first round is over budget (before anything is generated)."""
        if self.tokens is not None and plan.tokens > self.tokens:
            raise ConfigError(
                "--em-budget",
                f"the plan needs about {plan.tokens:,} tokens ({plan.input_tokens:,} prompt, at most "
                f"{plan.output_tokens:,} new) before its follow-ups, over the budget of {self.tokens:,}",
                "raise --em-budget, lower --em-samples or --em-max-new-tokens, or disable items in the thresholds",
            )
        cost = plan.cost(price)
        if self.usd is not None and cost is not None and cost > self.usd:
            raise ConfigError(
                "--em-budget",
                f"the plan would cost about ${cost:.2f} at --em-price before its follow-ups, over the budget of "
                f"${self.usd:.2f}",
                "raise --em-budget, lower --em-samples or --em-max-new-tokens, or disable items in the thresholds",
            )


def parse_budget(value: str | None) -> Budget:
    """``200000`` or ``200k`` or ``2M`` (tokens), or ``$5`` / ``5usd`` (needs ``--em-price``)."""
    if not value:
        return Budget()
    text = value.strip().lower().replace(",", "").replace("_", "")
    try:
        if text.startswith("$") or text.endswith("usd"):
            usd = float(text.strip("$").removesuffix("usd"))
            if usd <= 0:
                raise ValueError
            return Budget(usd=usd)
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        tokens = int(float(text[:-1] if scale > 1 else text) * scale)
        if tokens <= 0:
            raise ValueError
        return Budget(tokens=tokens)
    except ValueError:
        raise ConfigError(
            "--em-budget", f"{value!r} is not a budget", "write tokens (200000, 200k, 2M) or dollars ($5)"
        ) from None


def parse_price(value: str | None) -> tuple[float, float] | None:
    """``IN,OUT``: USD per million prompt tokens and per million new tokens."""
    if not value:
        return None
    parts = value.split(",")
    try:
        price = (float(parts[0]), float(parts[1])) if len(parts) == 2 else None
    except ValueError:
        price = None
    if price is None or min(price) < 0:
        raise ConfigError(
            "--em-price",
            f"{value!r} is not IN,OUT",
            "write the USD per million prompt tokens and per million new tokens, e.g. --em-price 2.5,10",
        )
    return price
