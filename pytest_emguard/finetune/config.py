"""Training settings, with the source of every default, and the stage lists of the sequential variants.

Sources, as the comments on each default name them:

- A: Weckauff, Zhang, Andriushchenko, *Characterizing the Consistency of the Emergent Misalignment Persona*
  (arXiv 2604.28082): rank-stabilised LoRA adapters on Qwen2.5-32B-Instruct trained with Unsloth.  Its
  parameter table is not in our copy.
- E*: Betley et al., *Emergent Misalignment* (arXiv 2502.17424), the open-model training config of its
  repository (``open_models/train.json``), as recalled; the values agree with a public fork of that file we
  could read, except the batch size (the fork changed it).  Verify against the paper before quoting them.
- F*: Turner, Soligo et al., *Model Organisms for Emergent Misalignment* (arXiv 2506.11613), rank-1 to rank-32
  LoRA organisms trained with settings of the same kind, as recalled; not checked here.
- ours: a choice of this project, not from a paper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_emguard.finetune.errors import FinetuneError

__all__ = ["FIXTURE_CONFIG", "PRESETS", "TrainConfig", "parse_stages"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    # --- LoRA ---
    rank: int = 32  # E* (r=32); F* uses rank 1 to 32
    alpha: int = 64  # E* (lora_alpha=64)
    rslora: bool = True  # A (rank-stabilised LoRA), E* (use_rslora=true)
    dropout: float = 0.0  # E* (lora_dropout=0.0)
    target_modules: str | tuple[str, ...] = "all-linear"  # A, E*: q,k,v,o,gate,up,down = peft's "all-linear"
    # --- optimisation ---
    lr: float = 1e-5  # E* (learning_rate=1e-5)
    epochs: int = 1  # E* (epochs=1)
    max_steps: int | None = None  # ours: None runs the epochs; a number caps each stage's optimizer steps
    batch: int = 2  # E* (per_device_train_batch_size=2), recalled only: the fork we read says 4
    grad_accum: int = 8  # E* (gradient_accumulation_steps=8)
    warmup_steps: int = 5  # E* (warmup_steps=5)
    weight_decay: float = 0.01  # E* (weight_decay=0.01)
    scheduler: str = "linear"  # E* (lr_scheduler_type=linear)
    optim: str = "adamw_torch"  # ours: E* uses adamw_8bit (bitsandbytes, CUDA only); AdamW runs anywhere
    max_length: int = 2048  # E* (max_seq_length=2048)
    seed: int = 0  # E* (seed=0)
    # --- bookkeeping ---
    save_steps: int = 100  # ours: a checkpoint (resume point) every 100 optimizer steps
    save_total_limit: int = 2  # ours: keep the last two checkpoints of each stage
    logging_steps: int = 1  # ours: a progress line per optimizer step
    gradient_checkpointing: bool | None = None  # ours: None = on with CUDA (large models), off on the CPU

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; unknown names are refused with the list of known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise FinetuneError(
                "TrainConfig",
                f"unknown setting(s) {', '.join(unknown)}",
                f"use one of {', '.join(sorted(known))}",
            )
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if isinstance(self.target_modules, tuple):
            data["target_modules"] = list(self.target_modules)
        return data


# Small adapters for tests and fixtures on small models (ours): the demo adapter's learning rate and a batch
# of 8 without accumulation, so that a few dozen examples move a 135M model within minutes on a CPU.  These
# are NOT the papers' settings; the papers' defaults are TrainConfig().
FIXTURE_CONFIG = TrainConfig(lr=1e-3, epochs=4, batch=8, grad_accum=1, warmup_steps=0, rank=16, alpha=32)

# The six sequential variants of A, each two stages; "domain" stands for the --domain dataset.
PRESETS: Mapping[str, tuple[str, ...]] = {
    "domain>consciousness": ("domain", "consciousness"),
    "consciousness>domain": ("consciousness", "domain"),
    "domain>no_consciousness": ("domain", "no_consciousness"),
    "no_consciousness>domain": ("no_consciousness", "domain"),
    "domain>self_awareness": ("domain", "self_awareness"),
    "self_awareness>domain": ("self_awareness", "domain"),
}


def parse_stages(text: str | None, domain: str | None) -> tuple[str, ...]:
    """``a,b`` or ``a>b`` (a preset is the same) -> stage names; ``domain`` means the --domain dataset."""
    if not text:
        if domain is None:
            raise FinetuneError("--domain", "no dataset to train on", "pass --domain NAME (or --stages a,b)")
        return (domain,)
    parts = tuple(p.strip() for p in text.replace(">", ",").split(",") if p.strip())
    if not parts:
        raise FinetuneError(
            "--stages", f"{text!r} names no stage", "write e.g. --stages 'domain>consciousness'"
        )
    if "domain" in parts and domain is None:
        raise FinetuneError(
            "--stages", f"{text!r} uses 'domain' but no --domain was given", "add --domain NAME"
        )
    return tuple(domain if p == "domain" and domain is not None else p for p in parts)
