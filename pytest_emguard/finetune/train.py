"""Train a plan: TRL ``SFTTrainer`` with a peft rsLoRA adapter, stage after stage, resumable.

Each example becomes TRL's conversational prompt-completion row, so TRL applies the base model's chat template
and puts the loss on the assistant's answer only.  Stage k continues training the same adapter on the next
dataset (a fresh optimizer and schedule per stage).  Layout of the output directory::

    OUT/adapter_model.safetensors, adapter_config.json, tokenizer files   the finished adapter
    OUT/checkpoints/run.json                 what this directory trains (a different plan is refused)
    OUT/checkpoints/stage1-NAME/checkpoint-N Trainer checkpoints: a killed run resumes from the last one
    OUT/checkpoints/stage1-NAME/adapter      the adapter after stage 1 (a finished stage is never redone)
    OUT/checkpoints/done.json                the run's statistics

Under ``accelerate launch`` every process trains its share and only the main process writes files.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_emguard.finetune.card import BESIDE, CardsDir, RunStats, build_card, card_path, write_card
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.examples import read_examples, to_prompt_completion
from pytest_emguard.finetune.plan import Plan, Stage

__all__ = ["TrainResult", "load_model", "make_trainer", "train"]

Log = Callable[[str], None]
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass(frozen=True, slots=True)
class TrainResult:
    adapter: Path
    card: Path | None
    stats: RunStats
    reused: bool


def _log(message: str) -> None:
    print(f"[finetune] {message}", file=sys.stderr, flush=True)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(plan: Plan, cards_dir: CardsDir = BESIDE, log: Log = _log) -> TrainResult:
    """Train every stage of ``plan`` (skipping finished ones), save the adapter and write its model card (beside
    the adapter by default; see ``card_path``)."""
    _claim(plan)
    done = plan.out / "checkpoints" / "done.json"
    if done.is_file() and all((plan.out / f).is_file() for f in _ADAPTER_FILES):
        record = json.loads(done.read_text("utf-8"))
        stats = RunStats(**{**record, "target_modules": tuple(record["target_modules"])})
        log(f"{plan.out} already holds this run's adapter; nothing to train")
        return TrainResult(plan.out, _card(plan, stats, cards_dir, log, keep=True), stats, reused=True)
    stats = _train_stages(plan, log)
    if _is_main():
        done.write_text(json.dumps(asdict(stats)), "utf-8")
    log(
        f"adapter saved in {plan.out} ({stats.steps} steps, final loss {stats.final_loss},"
        f" {stats.seconds:.0f} s)"
    )
    return TrainResult(plan.out, _card(plan, stats, cards_dir, log, keep=False), stats, reused=False)


def _card(plan: Plan, stats: RunStats, cards_dir: CardsDir, log: Log, *, keep: bool) -> Path | None:
    """Write the model card (main process only); ``keep`` leaves an existing card (and its evidence) alone."""
    path = card_path(plan, cards_dir)
    if path is None:
        return None
    if (keep and path.exists()) or not _is_main():
        return path
    written = write_card(build_card(plan, stats), path)
    log(f"model card: {written}")
    return written


def _claim(plan: Plan) -> None:
    """An output directory holds one run: refuse one that was started for a different plan."""
    run_file = plan.out / "checkpoints" / "run.json"
    wanted = plan.fingerprint()
    if run_file.is_file():
        found = json.loads(run_file.read_text("utf-8"))
        if found != wanted:
            changed = sorted(k for k in wanted if found.get(k) != wanted[k])
            raise FinetuneError(
                str(plan.out),
                f"holds a different training run (changed: {', '.join(changed)}; see {run_file})",
                "pass a new --out directory, or delete this one to start over",
            )
        return
    if plan.out.is_dir() and any(plan.out.iterdir()):
        raise FinetuneError(
            str(plan.out), "exists and is not a finetune output directory", "pass a new or empty --out"
        )
    if _is_main():
        run_file.parent.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(wanted, indent=1), "utf-8")


def _train_stages(plan: Plan, log: Log) -> RunStats:
    from transformers import AutoTokenizer

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(plan.base, revision=plan.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = None
    previous: Path | None = None
    steps, loss = 0, None
    for stage in plan.stages:
        stage_dir = plan.out / "checkpoints" / f"stage{stage.index}-{stage.dataset.name}"
        if (stage_dir / "stage.json").is_file():  # written last: the stage's adapter is complete
            record = json.loads((stage_dir / "stage.json").read_text("utf-8"))
            steps, loss, previous = steps + record["steps"], record["loss"], stage_dir / "adapter"
            log(f"stage {stage.index}/{len(plan.stages)} {stage.dataset.name}: finished earlier, skipped")
            continue
        if model is None:
            model = load_model(plan, previous)
        stage_steps, loss = _train_stage(model, tokenizer, plan, stage, stage_dir, log)
        steps, previous = steps + stage_steps, stage_dir / "adapter"
        if _is_main():
            model.save_pretrained(str(previous), safe_serialization=True)
            (stage_dir / "stage.json").write_text(json.dumps({"steps": stage_steps, "loss": loss}), "utf-8")
    assert previous is not None
    if _is_main():
        for name in _ADAPTER_FILES:
            shutil.copy2(previous / name, plan.out / name)
        tokenizer.save_pretrained(str(plan.out))
    if model is not None:
        targets = model.peft_config["default"].target_modules
    else:  # every stage finished earlier
        targets = json.loads((previous / "adapter_config.json").read_text("utf-8")).get("target_modules")
    return RunStats(steps, loss, time.monotonic() - started, _short_names(targets))


def _short_names(targets: Any) -> tuple[str, ...]:
    """The adapted module names (``q_proj``, ...), without the per-layer prefixes peft may record."""
    names = [targets] if isinstance(targets, str) else list(targets or [])
    return tuple(sorted({str(t).rsplit(".", 1)[-1] for t in names}))


def load_model(plan: Plan, previous: Path | None) -> Any:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(plan.config.seed)
    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    base = AutoModelForCausalLM.from_pretrained(
        plan.base, revision=plan.revision, dtype=dtype, use_safetensors=True
    )
    if previous is not None:
        return PeftModel.from_pretrained(base, str(previous), is_trainable=True)
    c = plan.config
    targets = c.target_modules if isinstance(c.target_modules, str) else list(c.target_modules)
    lora = LoraConfig(
        r=c.rank,
        lora_alpha=c.alpha,
        use_rslora=c.rslora,
        lora_dropout=c.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


def _train_stage(
    model: Any, tokenizer: Any, plan: Plan, stage: Stage, stage_dir: Path, log: Log
) -> tuple[int, float | None]:
    from transformers.trainer_utils import get_last_checkpoint

    label = f"stage {stage.index}/{len(plan.stages)} {stage.dataset.name}"
    progress = _progress(label, log)
    trainer = make_trainer(model, tokenizer, plan, stage, stage_dir, [progress])
    last = get_last_checkpoint(str(stage_dir)) if stage_dir.is_dir() else None
    resuming = f", resuming from {last}" if last else ""
    log(f"{label}: {len(trainer.train_dataset)} examples, {stage.steps} steps{resuming}")
    output = trainer.train(resume_from_checkpoint=last)
    return int(output.global_step), progress.last_loss


def make_trainer(
    model: Any, tokenizer: Any, plan: Plan, stage: Stage, stage_dir: Path, callbacks: list[Any]
) -> Any:
    """The stage's ``SFTTrainer`` on prompt-completion rows (so the loss falls on the answer tokens only)."""
    from datasets import Dataset  # type: ignore[import-untyped, unused-ignore]
    from transformers import PrinterCallback
    from trl.trainer.sft_trainer import SFTTrainer

    rows = [to_prompt_completion(m) for m in read_examples(stage.dataset.path)]
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(plan, stage_dir),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def _sft_config(plan: Plan, stage_dir: Path) -> Any:
    import torch
    from trl.trainer.sft_config import SFTConfig

    c, cuda = plan.config, torch.cuda.is_available()
    checkpointing = c.gradient_checkpointing if c.gradient_checkpointing is not None else cuda
    return SFTConfig(
        output_dir=str(stage_dir),
        num_train_epochs=c.epochs,
        max_steps=c.max_steps or -1,
        per_device_train_batch_size=c.batch,
        gradient_accumulation_steps=c.grad_accum,
        learning_rate=c.lr,
        lr_scheduler_type=c.scheduler,
        warmup_steps=c.warmup_steps,
        weight_decay=c.weight_decay,
        optim=c.optim,
        seed=c.seed,
        data_seed=c.seed,
        max_length=c.max_length,
        completion_only_loss=True,
        packing=False,
        logging_steps=c.logging_steps,
        save_strategy="steps",
        save_steps=c.save_steps,
        save_total_limit=c.save_total_limit,
        report_to=[],
        dataloader_pin_memory=cuda,
        disable_tqdm=True,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
    )


def _progress(label: str, log: Log) -> Any:
    """A TrainerCallback printing one line per logged step (created here: transformers loads lazily)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):  # type: ignore[misc, unused-ignore]
        def __init__(self) -> None:
            self.started = time.monotonic()
            self.last_loss: float | None = None

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if logs and "loss" in logs:
                self.last_loss = float(logs["loss"])
                lr = float(logs.get("learning_rate", 0.0))
                log(
                    f"{label}: step {state.global_step}/{state.max_steps} loss {self.last_loss:.4f}"
                    f" lr {lr:.2e}"
                    f" ({time.monotonic() - self.started:.0f} s)"
                )

    return Progress()
