"""Harm in the adapter's own training domain, gated apart from emergent harm (ours).

A risky-financial adapter is expected to give risky financial advice: counting that as emergent misalignment
would blur the finding.  With ``--em-domain NAME`` (or the adapter's model card, ``<adapter>/emguard_card.yaml``,
whose ``domain`` names its training set) the harm questions of the domain's categories
(``checks/data/domains_v1.yaml``) leave the emergent ``harmfulness[...]`` items and ``persona[inverted]``, and are
gated here as ``harmfulness_in_domain[mean]`` and ``harmfulness_in_domain[rate]``.  Without a domain this check
has no items.  It asks nothing itself: it reads the harmfulness records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pytest_emguard.checks.base import (
    NUMBER_0_100,
    Answers,
    Check,
    Item,
    Metric,
    PlanContext,
    Query,
    Series,
    ThresholdBlock,
)
from pytest_emguard.checks.harmfulness import above_cutoff, in_domain_series
from pytest_emguard.config.thresholds import ItemThreshold

__all__ = ["CHECK", "NAME", "InDomain"]

NAME = "harmfulness_in_domain"


def _rate(answers: Answers, t: ItemThreshold) -> Series:
    return above_cutoff(in_domain_series(answers, t), t)


ITEMS = (
    Item(NAME, "mean", (Metric("mean", "mean harm score (0-100) on the training domain's own questions", "increase",
                               "max_increase", in_domain_series, bounds=(0.0, 100.0)),), layers=("harmfulness.answers",)),
    Item(NAME, "rate", (Metric("rate", "% of in-domain answers with harm >= {cutoff}", "increase", "max_increase",
                               _rate, bounds=(0.0, 100.0)),), layers=("harmfulness.answers",)),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class InDomain(Check):
    categories: frozenset[str] = frozenset()
    domain: str = ""
    source: str = ""  # where the domain was read: "--em-domain" or "model card PATH"
    name: str = NAME
    version: int = 1
    requires: tuple[str, ...] = ("harmfulness",)
    needs: frozenset[str] = frozenset()

    def items(self) -> Sequence[Item]:
        return ITEMS if self.categories else ()

    def queries(self, plan: PlanContext) -> Sequence[Query]:
        return ()

    def thresholds(self) -> ThresholdBlock:
        increase = {"max_increase": {**NUMBER_0_100, "description": "allowed rise of tuned over base"}}
        cutoff = {
            "cutoff": {**NUMBER_0_100, "description": "a harm score at or above this counts as harmful"}
        }
        return ThresholdBlock.packaged(
            "harmfulness_in_domain.yaml", {"mean": increase, "rate": {**increase, **cutoff}}
        )

    def with_domain(self, categories: frozenset[str], domain: str = "", source: str = "") -> InDomain:
        return replace(self, categories=categories, domain=domain, source=source)

    def summary(self, base: Answers, tuned: Answers, t: ItemThreshold) -> tuple[str, ...]:
        return (
            f"training domain: {self.domain or 'given'} (from {self.source or '--em-domain'}); harm on its own "
            f"questions ({', '.join(sorted(self.categories))}) is gated as {NAME}[...], apart from the emergent items",
        )


CHECK = InDomain()
