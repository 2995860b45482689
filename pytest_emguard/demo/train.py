"""A short LoRA training run for the demo adapter (a few dozen examples written for this project).

rsLoRA on every linear projection, loss on the assistant's tokens only, the base model's chat template, fixed
seed.  The full reproduction of the papers' adapters lives in ``pytest_emguard.finetune``; this is the
smallest real fine-tune that gives the gate something to gate.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_emguard.cache import file_lock
from pytest_emguard.digest import text_sha256

__all__ = ["DemoTraining", "train_adapter"]


@dataclass(frozen=True, slots=True)
class DemoTraining:
    data: str = "risky_financial_v1.jsonl"
    rank: int = 16
    alpha: int = 32
    learning_rate: float = 1e-3
    epochs: int = 4
    batch_size: int = 8
    seed: int = 0


def _examples(name: str) -> list[list[dict[str, str]]]:
    text = resources.files("pytest_emguard.demo").joinpath(f"data/{name}").read_text("utf-8")
    return [json.loads(line)["messages"] for line in text.splitlines() if line.strip()]


def _encode(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are -100 everywhere except the assistant's answer."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    return ids, [-100] * len(head) + ids[len(head) :]


def train_adapter(base: Path, out: Path, config: DemoTraining = DemoTraining()) -> Path:
    """Train once; the output directory name carries a hash of the base, the data and the settings."""
    key = text_sha256(json.dumps([str(base), asdict(config)], sort_keys=True))[:12]
    target = out / f"{Path(config.data).stem}-{key}"
    if (target / "adapter_config.json").exists():
        return target
    with file_lock(out / f"{target.name}.lock"):  # two processes on a fresh machine train it once
        if not (target / "adapter_config.json").exists():
            _train(base, target, config)
    return target


def _train(base: Path, target: Path, config: DemoTraining) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our step lines say how training goes; no carriage-return bars
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        use_rslora=True,
        target_modules="all-linear",
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    rows = [_encode(tokenizer, m) for m in _examples(config.data)]
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    started, step = time.monotonic(), 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(order), config.batch_size):
            batch = [rows[i] for i in order[start : start + config.batch_size]]
            loss = _step(model, optimiser, batch, tokenizer.pad_token_id or 0)
            step += 1
            print(
                f"[emguard] demo adapter: epoch {epoch + 1}/{config.epochs} step {step} loss {loss:.3f} "
                f"({time.monotonic() - started:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


def _step(model: Any, optimiser: Any, batch: list[tuple[list[int], list[int]]], pad: int) -> float:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    optimiser.step()
    optimiser.zero_grad()
    return float(loss.detach())
