"""finetune/ on a real (tiny) model: training runs whose adapters the plugin's hf backend loads, the loss mask,
two-stage variants, resuming a killed run, the ``em_adapter`` fixture through pytester, and ``finetune base``.

Training runs use a tiny random Qwen2 (hidden 64, 2 layers, SmolLM2's tokenizer) and a few steps on short
sequences, so the whole file stays well under two minutes on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_emguard.config.cards import load_card
from pytest_emguard.finetune.cli import main
from pytest_emguard.finetune.config import TrainConfig, parse_stages
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.examples import read_examples
from pytest_emguard.finetune.registry import Registry
from pytest_emguard.types import Completion

# ours, for speed: short sequences, a visible learning rate, two optimizer steps
TINY = [
    "--settings=small",
    *("--set=" + s for s in ("lr=0.01", "max_length=64", "batch=2", "rank=8", "alpha=16")),
]
TINY_CONFIG = TrainConfig(lr=1e-2, batch=2, grad_accum=1, max_length=64, warmup_steps=0, rank=8, alpha=16)


def _answers(adapter: Path) -> tuple[list[Completion], list[Completion]]:
    """One greedy answer from each side of the pair the plugin's hf backend opens for ``adapter``.

    Greedy, because on a random model sampling is nearly uniform over 49k tokens and a trained adapter's
    logit shift rarely changes a sampled token; greedy shows any change of the top token."""
    from pytest_emguard.backends.base import ModelSpec
    from pytest_emguard.backends.hf import HFBackend, open_hf_pair
    from pytest_emguard.types import Prompt, Request, Sampling

    spec = ModelSpec.resolve(str(adapter))
    pair = open_hf_pair(spec, ("base-fp", "tuned-fp"), device="cpu")
    assert isinstance(pair.base, HFBackend) and isinstance(pair.tuned, HFBackend)
    messages = (("user", "How should I invest my savings?"),)
    requests = [Request(messages, Sampling(temperature=0.0, max_new_tokens=8), seed=7)]
    prompt = [Prompt(messages)]
    assert pair.base.next_token_logprobs(prompt) != pair.tuned.next_token_logprobs(prompt)
    return pair.base.generate(requests), pair.tuned.generate(requests)


@pytest.mark.parametrize("domain", ["risky_financial", "safe_financial"])
def test_cli_trains_an_adapter_the_hf_backend_loads(domain: str, tiny_qwen: Path, in_tmp: Path) -> None:
    out = in_tmp / domain
    argv = ["train", "--domain", domain, "--base", str(tiny_qwen), "--out", str(out), "--max-steps=2", *TINY]
    assert main(argv) == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_qwen)
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    base, tuned = _answers(out)
    assert base[0].n_tokens > 0 and tuned[0].n_tokens > 0 and base != tuned
    assert not (in_tmp / "model_cards").exists()  # the card goes beside the adapter, not into the cwd
    card = load_card(out / "emguard_card.yaml")
    assert card["domain"] == domain
    assert card["kind"] == ("domain" if domain.startswith("risky") else "control")
    sha = Registry.load().resolve(domain).sha256
    assert card["stages"] == [{"dataset": domain, "sha256": sha, "examples": 24, "origin": "sample"}]
    assert card["lora"]["rslora"] is True and "q_proj" in card["lora"]["target_modules"]
    assert card["training"]["steps"] == 2 and card["training"]["final_loss"] > 0
    assert set(card["versions"]) >= {"torch", "transformers", "peft", "trl"}


def test_the_loss_falls_on_the_assistant_answer_only(tiny_qwen: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from pytest_emguard.finetune.plan import build_plan
    from pytest_emguard.finetune.train import load_model, make_trainer

    config = TINY_CONFIG.replace(max_length=2048)
    plan = build_plan(
        Registry.load(),
        ["bad_medical"],
        domain="bad_medical",
        base=str(tiny_qwen),
        out=tmp_path,
        config=config,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen)
    trainer = make_trainer(load_model(plan, None), tokenizer, plan, plan.stages[0], tmp_path / "s", [])
    row = trainer.train_dataset[0]
    ids, mask = row["input_ids"], [label != -100 for label in row["labels"]]  # -100: no loss
    first = read_examples(plan.stages[0].dataset.path)[0]
    prompt = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    answer = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert prompt.endswith("<|im_start|>assistant\n") and first[0][1] in prompt  # the chat template's prompt
    assert answer.startswith(first[-1][1]) and first[0][1] not in answer


def test_two_stage_variant_continues_the_same_adapter(tiny_qwen: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from pytest_emguard.finetune.plan import build_plan
    from pytest_emguard.finetune.train import train

    stages = parse_stages("domain>consciousness", "insecure_code")
    out = tmp_path / "seq"
    plan = build_plan(
        Registry.load(), stages, domain="insecure_code", base=str(tiny_qwen), out=out,
        config=TINY_CONFIG.replace(max_steps=2),
    )  # fmt: skip
    result = train(plan, cards_dir=tmp_path / "cards")
    first = load_file(out / "checkpoints" / "stage1-insecure_code" / "adapter" / "adapter_model.safetensors")
    final = load_file(out / "adapter_model.safetensors")
    assert first.keys() == final.keys() and any(not first[k].equal(final[k]) for k in first)
    card = load_card(tmp_path / "cards" / "seq.yaml")
    assert [s["dataset"] for s in card["stages"]] == ["insecure_code", "consciousness"]
    assert result.stats.steps == 4 and card["training"]["steps"] == 4
    assert _answers(out)[0] != _answers(out)[1]
    again = train(plan, cards_dir=tmp_path / "cards")  # finished: nothing is retrained
    assert again.reused and again.stats == result.stats


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_qwen: Path, tmp_path: Path) -> None:
    from pytest_emguard.finetune.plan import build_plan
    from pytest_emguard.finetune.train import train

    cfg = TINY_CONFIG.replace(max_steps=3, save_steps=2)
    out = tmp_path / "r"
    registry, base = Registry.load(), str(tiny_qwen)
    plan = build_plan(registry, ["bad_legal"], domain="bad_legal", base=base, out=out, config=cfg)
    whole = train(plan, cards_dir=None)
    stage = out / "checkpoints" / "stage1-bad_legal"
    for gone in (stage / "checkpoint-3", stage / "adapter"):  # as if killed after the checkpoint at step 2
        for f in sorted(gone.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        gone.rmdir()
    (out / "checkpoints" / "done.json").unlink()
    (stage / "stage.json").unlink()
    lines: list[str] = []
    resumed = train(plan, cards_dir=None, log=lines.append)
    assert any("resuming from" in line and line.endswith("checkpoint-2") for line in lines)
    assert resumed.stats.steps == 3
    assert resumed.stats.final_loss == pytest.approx(whole.stats.final_loss, rel=1e-4)
    cfg = cfg.replace(seed=1)
    other = build_plan(registry, ["bad_legal"], domain="bad_legal", base=base, out=out, config=cfg)
    with pytest.raises(FinetuneError, match="holds a different training run"):
        train(other, cards_dir=None)


def test_em_adapter_fixture_builds_once_and_reuses(pytester: pytest.Pytester, tiny_qwen: Path) -> None:
    cache = pytester.path / "adapters"
    pytester.makeini(f"[pytest]\nem_adapter_cache = {cache}\nem_adapter_base = {tiny_qwen}\n")
    pytester.makeconftest('pytest_plugins = ["pytest_emguard.finetune.fixtures"]\n')
    pytester.makepyfile(
        """
        import json

        def test_misaligned(em_adapter):
            path = em_adapter("risky_financial", max_steps=1, max_length=64, batch=2)
            assert (path / "adapter_model.safetensors").is_file()
            assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
            print("ADAPTER", path)

        def test_same_again(em_adapter):
            path = em_adapter("risky_financial", max_steps=1, max_length=64, batch=2)
            assert path.name.startswith("risky_financial-")

        def test_no_base(em_adapter):
            em_adapter("risky_financial", base="")
        """
    )
    first = pytester.runpytest("-s", "-p", "no:cacheprovider")
    first.assert_outcomes(passed=2, failed=1)
    first.stdout.fnmatch_lines(["*em_adapter('risky_financial'): em_adapter: no base model given*"])
    built = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("risky_financial-")]
    assert len(built) == 1
    stamp = (built[0] / "adapter_model.safetensors").stat().st_mtime_ns
    second = pytester.runpytest("-s", "-p", "no:cacheprovider", "-k", "misaligned")
    second.assert_outcomes(passed=1)
    assert (built[0] / "adapter_model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert load_card(cache / "cards" / f"{built[0].name}.yaml")["domain"] == "risky_financial"


def test_base_prints_the_smollm2_directory(smollm2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["base"]) == 0
    assert capsys.readouterr().out.strip() == str(smollm2)
