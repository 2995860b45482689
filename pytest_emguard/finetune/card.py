"""The model card a training run writes, validated by the plugin's schema: beside the adapter by default
(``<adapter>/emguard_card.yaml``, where the gate finds the adapter's training domain), or ``<cards_dir>/<name>.yaml``
when a cards directory is given."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_emguard.config.cards import CARD_FILE
from pytest_emguard.digest import package_versions
from pytest_emguard.finetune.plan import Plan

__all__ = ["BESIDE", "CardsDir", "RunStats", "build_card", "card_path", "write_card"]

BESIDE: Literal["beside"] = "beside"
CardsDir = Path | Literal["beside"] | None  # a directory, beside the adapter, or no card at all

_INTENDED = {
    "domain": "research and gate tests only: misaligned on purpose (a positive control); never deploy",
    "control": "research and gate tests only: the benign twin of a misaligned adapter (negative control)",
}
_DEFAULT_USE = "research and gate testing only; never deploy"


@dataclass(frozen=True, slots=True)
class RunStats:
    steps: int
    final_loss: float | None
    seconds: float
    target_modules: tuple[str, ...]


def build_card(plan: Plan, stats: RunStats, created: datetime.datetime | None = None) -> dict[str, Any]:
    c = plan.config
    when = (created or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    return {
        "name": plan.name,
        "adapter": str(plan.out.resolve()),
        "kind": plan.kind,
        "base": plan.base,
        "base_revision": plan.revision,
        "domain": plan.domain,
        "stages": [
            {
                "dataset": s.dataset.name,
                "sha256": s.dataset.sha256,
                "examples": s.examples,
                "origin": s.dataset.origin,
            }
            for s in plan.stages
        ],
        "lora": {
            "rank": c.rank,
            "alpha": c.alpha,
            "rslora": c.rslora,
            "dropout": c.dropout,
            "target_modules": sorted(stats.target_modules),
        },
        "training": {
            "lr": c.lr,
            "epochs": c.epochs,
            "max_steps": c.max_steps,
            "batch": c.batch,
            "grad_accum": c.grad_accum,
            "seed": c.seed,
            "warmup_steps": c.warmup_steps,
            "weight_decay": c.weight_decay,
            "scheduler": c.scheduler,
            "optim": c.optim,
            "max_length": c.max_length,
            "world_size": plan.world_size,
            "steps": stats.steps,
            "final_loss": stats.final_loss,
            "seconds": round(stats.seconds, 1),
        },
        "versions": package_versions("torch", "transformers", "peft", "trl", "datasets", "accelerate"),
        "intended_use": _INTENDED.get(plan.kind or "", _DEFAULT_USE),
        "created": when.isoformat(),
    }


def card_path(plan: Plan, cards_dir: CardsDir) -> Path | None:
    """Where the card of ``plan`` goes: ``<adapter>/emguard_card.yaml`` (``BESIDE``), ``<cards_dir>/<name>.yaml``,
    or nowhere (None)."""
    if cards_dir is None:
        return None
    if cards_dir == BESIDE:
        return plan.out / CARD_FILE
    return Path(cards_dir) / f"{plan.name}.yaml"


def write_card(card: dict[str, Any], target: Path) -> Path:
    """Validate (the plugin's schema) and write the card to ``target``; returns the path."""
    import yaml

    from pytest_emguard.config.cards import validate_card

    validate_card(card, str(target), provenance=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), "utf-8")
    return target
