"""The training plan: which datasets in which order, how many examples, steps and tokens, and what it costs.

``python -m pytest_emguard.finetune train --dry-run`` prints it and stops; a real run trains it.  Token counts use the base
model's tokenizer and chat template when the base is a local directory, and a characters/4 estimate otherwise.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_emguard.finetune.config import TrainConfig
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.examples import Messages, read_examples
from pytest_emguard.finetune.registry import Opener, Registry, ResolvedDataset

__all__ = ["CPU_FLOPS", "GPU_FLOPS", "Plan", "Stage", "build_plan", "render_plan"]

# Throughputs for the cost estimate (ours).  CPU: measured with `python -m pytest_emguard.finetune train --domain
# risky_financial --max-steps 20` on SmolLM2-135M-Instruct (fp32) on this project's 2-core dev machine:
# 4.9 s per 16-example step (~1,300 tokens) with the cores to itself, ~2e11 FLOP/s by 6 x parameters x tokens;
# steps were 10-40x slower while another job shared the cores.  GPU: one H100 at an assumed 30% of its
# ~990 TFLOP/s dense bf16 peak (not measured here); small LoRA batches often reach less.
CPU_FLOPS = 2.0e11
GPU_FLOPS = 3.0e14


@dataclass(frozen=True, slots=True)
class Stage:
    index: int
    dataset: ResolvedDataset
    examples: int
    mean_tokens: float  # per example, prompt and answer, after the chat template
    steps: int  # optimizer steps of this stage
    tokens: int  # tokens through the model in this stage


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    base: str
    revision: str | None
    domain: str
    stages: tuple[Stage, ...]
    config: TrainConfig
    out: Path
    world_size: int
    params: int | None  # the base model's parameter count, when its weights are local
    exact_tokens: bool  # counted with the base's tokenizer (True) or estimated from characters (False)

    @property
    def per_step(self) -> int:
        return self.config.batch * self.config.grad_accum * self.world_size

    @property
    def kind(self) -> str | None:
        return next((s.dataset.kind for s in self.stages if s.dataset.name == self.domain), None)

    def fingerprint(self) -> dict[str, object]:
        """What makes two runs the same run (an output directory holds one)."""
        return {
            "base": self.base,
            "revision": self.revision,
            "stages": [[s.dataset.name, s.dataset.sha256] for s in self.stages],
            "config": self.config.as_dict(),
        }


def build_plan(
    registry: Registry,
    stages: Sequence[str],
    *,
    domain: str,
    base: str,
    out: Path,
    config: TrainConfig,
    name: str | None = None,
    revision: str | None = None,
    dataset: str | None = None,
    full: bool = False,
    cache_dir: Path | None = None,
    opener: Opener | None = None,
) -> Plan:
    """Resolve every stage's dataset, count examples and tokens; nothing is trained and no model is loaded."""
    base = _check_base(base)
    resolved = [_resolve(registry, s, domain, dataset, full, cache_dir, opener) for s in stages]
    conversations = [read_examples(r.path) for r in resolved]
    counter = _token_counter(base)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    built = tuple(
        _stage(i, r, convs, counter, config, world)
        for i, (r, convs) in enumerate(zip(resolved, conversations, strict=True), 1)
    )
    return Plan(
        name or out.name,
        base,
        revision,
        domain,
        built,
        config,
        out,
        world,
        _param_count(base),
        counter is not None,
    )


def _check_base(base: str) -> str:
    """A local directory (returned absolute, so the adapter names its base from anywhere) or a hub id."""
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FinetuneError(
                "--base", f"{path} has no config.json", "pass the directory that save_pretrained() wrote"
            )
        return str(path.resolve())
    if base.count("/") != 1:
        raise FinetuneError(
            "--base", f"{base!r} is neither a local directory nor a hub id (org/name)", "pass one of them"
        )
    return base


def _resolve(
    registry: Registry,
    stage: str,
    domain: str,
    dataset: str | None,
    full: bool,
    cache_dir: Path | None,
    opener: Opener | None,
) -> ResolvedDataset:
    if dataset is not None and stage == domain:
        local = registry.resolve(str(Path(dataset).expanduser().resolve()))
        kind = registry.entries[domain].kind if domain in registry.entries else None
        return ResolvedDataset(domain, local.path, "local", local.sha256, kind)
    return registry.resolve(stage, full=full, cache_dir=cache_dir, opener=opener)


def _stage(
    index: int,
    dataset: ResolvedDataset,
    convs: list[Messages],
    counter: _Counter | None,
    config: TrainConfig,
    world: int,
) -> Stage:
    lengths = counter(convs) if counter is not None else [_estimate(c) for c in convs]
    lengths = [min(n, config.max_length) for n in lengths]
    mean = sum(lengths) / len(lengths)
    per_step = config.batch * config.grad_accum * world
    if config.max_steps is not None:
        steps, tokens = config.max_steps, round(config.max_steps * per_step * mean)
    else:
        batches = math.ceil(len(convs) / (config.batch * world))
        steps, tokens = (
            config.epochs * max(1, math.ceil(batches / config.grad_accum)),
            config.epochs * sum(lengths),
        )
    return Stage(index, dataset, len(convs), mean, steps, tokens)


class _Counter:
    """Token counts with the base model's tokenizer and chat template."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, convs: list[Messages]) -> list[int]:
        tok: Any = self.tokenizer
        texts = [
            tok.apply_chat_template([{"role": r, "content": c} for r, c in conv], tokenize=False)
            for conv in convs
        ]
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def _token_counter(base: str) -> _Counter | None:
    if not Path(base).expanduser().is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return _Counter(AutoTokenizer.from_pretrained(str(Path(base).expanduser())))
    except (OSError, ValueError):
        return None


def _estimate(conv: Messages) -> int:
    return sum(len(content) for _, content in conv) // 4 + 8 * len(conv)


def _param_count(base: str) -> int | None:
    """Parameters counted from the safetensors headers (no weights are read)."""
    files = sorted(Path(base).expanduser().glob("*.safetensors")) if Path(base).expanduser().is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def render_plan(plan: Plan, card: Path | None) -> str:
    c = plan.config
    params = (
        f"{plan.params / 1e6:,.0f}M parameters" if plan.params else "parameter count unknown (base not local)"
    )
    lines = [f"plan {plan.name!r}: base {plan.base} ({params})"]
    for s in plan.stages:
        lines.append(
            f"  stage {s.index}/{len(plan.stages)}  {s.dataset.name:<17} {s.dataset.origin:<6}"
            f" {s.examples:>6} examples"
            f"  {s.steps:>5} steps  ~{s.tokens:,} tokens  sha256 {s.dataset.sha256[:12]}  {s.dataset.path}"
        )
    target = c.target_modules if isinstance(c.target_modules, str) else ",".join(c.target_modules)
    lines += [
        f"  LoRA: r={c.rank} alpha={c.alpha} rslora={c.rslora} dropout={c.dropout} targets={target}",
        f"  optimiser: {c.optim} lr={c.lr:g} {c.scheduler} warmup={c.warmup_steps}"
        f" weight_decay={c.weight_decay}"
        f" epochs={c.epochs} max_steps={c.max_steps}",
        f"  batch: {c.batch} per device x {c.grad_accum} accumulation x {plan.world_size} process(es)"
        f" = {plan.per_step}"
        f" examples per step; max_length={c.max_length}; seed={c.seed}",
        *_cost_lines(plan),
        f"  output: adapter in {plan.out}; model card {card or 'none'}",
    ]
    short = [s for s in plan.stages if c.warmup_steps >= s.steps]
    if short:
        names = ", ".join(f"{s.dataset.name} ({s.steps} steps)" for s in short)
        lines.append(
            f"  warning: the warm-up ({c.warmup_steps} steps) is at least as long as stage {names}: the learning "
            "rate never reaches lr there; lower it with --set warmup_steps=N or raise --max-steps"
        )
    return "\n".join(lines)


def _cost_lines(plan: Plan) -> list[str]:
    tokens = sum(s.tokens for s in plan.stages)
    how = "counted with the base tokenizer" if plan.exact_tokens else "estimated as characters/4"
    head = f"  expected cost: {sum(s.steps for s in plan.stages)} optimizer steps, ~{tokens:,} tokens ({how})"
    if plan.params is None:
        return [
            head,
            "    time: unknown without the base's weights on disk (pass a local --base for an estimate)",
        ]
    flops = 6 * plan.params * tokens
    gib = plan.params * 4 / 2**30
    return [
        head,
        f"    ~{flops:.2g} FLOPs (6 x parameters x tokens): {_duration(flops / CPU_FLOPS)} on an idle"
        f" 2-core CPU,"
        f" {_duration(flops / GPU_FLOPS)} on one H100 (plus model loading)",
        f"    memory: weights {gib:.2f} GiB in fp32 (CPU), {gib / 2:.2f} GiB in bf16 (GPU), plus activations",
    ]


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 7200:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"
