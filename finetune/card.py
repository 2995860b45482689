"""The model card a training run writes: ``<cards_dir>/<name>.yaml``, validated by the plugin's schema."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.plan import Plan
from pytest_emguard.api import package_versions

__all__ = ["RunStats", "build_card", "write_card"]

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


def write_card(card: dict[str, Any], cards_dir: Path) -> Path:
    """Validate (the plugin's schema) and write ``cards_dir/<name>.yaml``; returns the path."""
    import yaml

    from pytest_emguard.cards import validate_card

    target = cards_dir / f"{card['name']}.yaml"
    validate_card(card, str(target))
    cards_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), "utf-8")
    return target
