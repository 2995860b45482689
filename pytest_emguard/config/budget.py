"""``--em-budget`` and ``--em-price``, parsed and checked before anything loads; the cost preflight
(``run/cost.py``) checks a plan's estimate against them before anything is generated."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_emguard.errors import ConfigError

if TYPE_CHECKING:
    from pytest_emguard.run.cost import Estimate

__all__ = ["Budget", "parse_budget", "parse_price"]


@dataclass(frozen=True, slots=True)
class Budget:
    tokens: int | None = None  # prompt + new tokens
    usd: float | None = None

    def check(self, plan: Estimate, price: tuple[float, float] | None) -> None:
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
    if price is None or not all(0 <= v < math.inf for v in price):  # NaN fails the comparison too
        raise ConfigError(
            "--em-price",
            f"{value!r} is not IN,OUT",
            "write the USD per million prompt tokens and per million new tokens, e.g. --em-price 2.5,10",
        )
    return price
