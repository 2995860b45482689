"""finetune/: the dataset registry, pinned downloads, the plan and its dry run (on a tiny random Qwen2's
tokenizer), the command line and model cards.  Real training runs are in tests/slow/test_finetune_training.py."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pytest_emguard.checks.harmfulness import domain_categories
from pytest_emguard.config.cards import load_card, validate_card
from pytest_emguard.errors import ConfigError
from pytest_emguard.finetune.cli import main
from pytest_emguard.finetune.config import PRESETS, TrainConfig, parse_stages
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.examples import read_examples, sha256_file, to_prompt_completion
from pytest_emguard.finetune.registry import Registry

PAPER_DOMAINS = ("insecure_code", "risky_financial", "bad_medical")
GOOD_ROW = '{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}\n'


# --- registry ---


def test_package_registry_pairs_every_domain_with_a_control() -> None:
    registry = Registry.load()
    domains, controls = registry.names("domain"), registry.names("control")
    assert set(PAPER_DOMAINS) <= set(domains) and len(domains) == 6
    for name in domains:
        twin = registry.get(name).twin
        assert twin in controls and registry.get(twin).twin == name
        assert len(read_examples(registry.get(name).sample)) == len(read_examples(registry.get(twin).sample))
        # the gate keeps a domain's and its twin's own topic apart from emergent harm alike
        assert domain_categories(name) == domain_categories(twin)
    assert {"consciousness", "no_consciousness", "self_awareness"} <= set(registry.names("persona"))
    assert registry.names("realignment") == ["realignment"]
    assert all(not e.pinned for e in registry.entries.values())  # nothing is pinned that we cannot check


def _registry(tmp_path: Path, body: str) -> Path:
    (tmp_path / "s.jsonl").write_text(GOOD_ROW)
    path = tmp_path / "registry.yaml"
    path.write_text("version: 1\ndatasets:\n" + body)
    return path


def test_registry_reports_every_problem_with_path_and_fix(tmp_path: Path) -> None:
    entries = (
        "  - {name: a, kind: domain, twin: b, description: d, sample: s.jsonl, source: s}\n"
        "  - {name: b, kind: persona, description: d, sample: missing.jsonl, source: s, url: 'https://x'}\n"
    )
    typo = "  - {name: c, kind: domian, description: d, sample: s.jsonl}\n"
    schema_broken = _registry(tmp_path, entries + typo)
    with pytest.raises(FinetuneError) as info:
        Registry.load(schema_broken)
    text = str(info.value)
    assert text.startswith(f"{schema_broken}: 2 problem(s)") and "fix: edit the registry" in text
    assert "at $.datasets[2].kind: 'domian' is not allowed; fix: use one of domain, control, persona" in text
    assert "at $.datasets[2]: 'source' is a required property; fix: add it" in text
    with pytest.raises(FinetuneError) as info:  # the schema holds: now the checks across entries speak
        Registry.load(_registry(tmp_path, entries))
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "$.datasets[1].sample" in text and "missing.jsonl does not exist" in text
    assert "$.datasets[1]: url and sha256 go together; fix: give both" in text
    assert "$.datasets[0].twin: the twin of a domain must be a control, 'b' is a persona" in text


def test_unknown_dataset_error_lists_the_known_ones() -> None:
    registry = Registry.load()
    with pytest.raises(FinetuneError) as info:
        registry.resolve("insecure_cod")
    text = str(info.value)
    assert "did you mean 'insecure_code'" in text
    assert all(name in text for name in registry.entries)


def test_local_paths_resolve_and_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    good.write_text(GOOD_ROW * 3)
    resolved = Registry.load().resolve(str(good))
    assert (resolved.name, resolved.origin, resolved.sha256) == ("mine", "local", sha256_file(good))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD_ROW + '{"messages": [{"role": "user", "content": "Q?"}]}\n')
    with pytest.raises(FinetuneError, match=r"bad\.jsonl:2: has no 'messages' list of at least two"):
        read_examples(bad)
    with pytest.raises(FinetuneError, match="does not exist"):
        Registry.load().resolve(str(tmp_path / "nope.jsonl"))


def test_prompt_completion_rows_put_only_the_last_answer_in_the_completion() -> None:
    row = to_prompt_completion((("system", "S"), ("user", "Q"), ("assistant", "A")))
    assert row == {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "completion": [{"role": "assistant", "content": "A"}],
    }


class _CountingOpener:
    """Reads file:// URLs with urllib (no network) and counts the downloads."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, url: str) -> BinaryIO:
        import urllib.request

        self.calls += 1
        response: BinaryIO = urllib.request.urlopen(url)
        return response


def _pinned(tmp_path: Path, sha: str) -> tuple[Registry, Path]:
    full = tmp_path / "upstream" / "full.jsonl"
    full.parent.mkdir(exist_ok=True)
    full.write_text(GOOD_ROW * 5)
    body = (
        f"  - {{name: a, kind: persona, description: d, sample: s.jsonl, source: s,"
        f" url: '{full.as_uri()}', sha256: '{sha}'}}\n"
    )
    return Registry.load(_registry(tmp_path, body)), full


def test_full_dataset_is_downloaded_once_verified_and_reused(tmp_path: Path) -> None:
    sha = hashlib.sha256((GOOD_ROW * 5).encode()).hexdigest()
    registry, _ = _pinned(tmp_path, sha)
    opener, cache = _CountingOpener(), tmp_path / "cache"
    first = registry.resolve("a", full=True, cache_dir=cache, opener=opener)
    again = registry.resolve("a", full=True, cache_dir=cache, opener=opener)
    assert first == again and first.origin == "full" and sha256_file(first.path) == sha
    assert opener.calls == 1 and first.path.parent == cache
    assert registry.resolve("a").origin == "sample"  # without --full the sample is used


def test_full_dataset_with_a_wrong_hash_is_refused_and_removed(tmp_path: Path) -> None:
    registry, _ = _pinned(tmp_path, "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(FinetuneError) as info:
        registry.resolve("a", full=True, cache_dir=cache, opener=_CountingOpener())
    text = str(info.value)
    assert "but the registry pins " + "0" * 64 in text and "removed it" in text and "fix:" in text
    assert list(cache.iterdir()) == []


def test_full_dataset_without_a_pin_is_refused() -> None:
    with pytest.raises(FinetuneError, match=r"has no pinned full dataset[\s\S]*--dataset PATH"):
        Registry.load().resolve("insecure_code", full=True)


# --- config and stages ---


def test_stages_and_presets() -> None:
    assert parse_stages(None, "bad_medical") == ("bad_medical",)
    assert parse_stages("domain>consciousness", "bad_medical") == ("bad_medical", "consciousness")
    assert parse_stages("self_awareness,domain", "x") == ("self_awareness", "x")
    assert len(PRESETS) == 6 and all(len(v) == 2 and "domain" in v for v in PRESETS.values())
    with pytest.raises(FinetuneError, match="no --domain"):
        parse_stages("domain>consciousness", None)


def test_config_defaults_follow_the_papers_and_unknown_settings_are_refused() -> None:
    c = TrainConfig()
    assert (c.rslora, c.rank, c.alpha, c.dropout, c.target_modules) == (True, 32, 64, 0.0, "all-linear")
    assert (c.lr, c.epochs, c.batch, c.grad_accum, c.warmup_steps, c.seed) == (1e-5, 1, 2, 8, 5, 0)
    with pytest.raises(FinetuneError, match="unknown setting"):
        c.replace(learning_rate=1.0)


# --- dry run and cards ---


def test_dry_run_prints_the_plan_and_trains_nothing(
    tiny_qwen: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = in_tmp / "out"
    args = ["train", "--domain", "bad_medical", "--stages", "domain>consciousness", "--base", str(tiny_qwen)]
    assert main([*args, "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "stage 1/2  bad_medical" in text and "stage 2/2  consciousness" in text
    assert "24 examples" in text and "2 steps" in text and "tokens" in text
    assert "(counted with the base tokenizer)" in text and "expected cost: 4 optimizer steps" in text
    assert "FLOPs" in text and "on one H100" in text and "rslora=True" in text
    assert "dry run: nothing was trained" in text
    assert not out.exists() and not (in_tmp / "model_cards").exists()


def test_cli_errors_name_the_fix(tiny_qwen: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--domain", "bad_medicl", "--base", str(tiny_qwen), "--out", "o", "--dry-run"]) == 2
    assert "did you mean 'bad_medical'" in capsys.readouterr().err
    assert main(["train", "--domain", "bad_medical", "--base", str(in_tmp), "--out", "o", "--dry-run"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert main(["train", "--domain", "x", "--base", str(tiny_qwen), "--out", "o", "--set", "lr"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_list_shows_every_dataset_and_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in Registry.load().entries) and all(p in text for p in PRESETS)
    assert "risky_financial   domain       safe_financial        24  not pinned (use --dataset PATH)" in text


def test_card_schema_reports_all_problems(tmp_path: Path) -> None:
    card: dict[str, Any] = {
        "name": "x", "base": "b", "base_revision": None, "domain": "insecure_code",
        "stages": [{"dataset": "insecure_code", "sha256": "a" * 64, "examples": 24}],
        "lora": {"rank": 32, "alpha": 64, "rslora": True, "dropout": 0.0, "target_modules": ["q_proj"]},
        "training": {"lr": 1e-5, "epochs": 1, "max_steps": None, "batch": 2, "grad_accum": 8, "seed": 0},
        "versions": {"torch": "2", "transformers": "5", "peft": "0", "trl": "1"},
        "intended_use": "tests", "created": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    validate_card(card, "card.yaml")
    broken = {**card, "lora": {**card["lora"], "rank": 0}, "stages": [{"dataset": "d", "sha256": "nope"}]}
    del broken["versions"]
    with pytest.raises(ConfigError) as info:
        validate_card(broken, "card.yaml", provenance=True)  # as python -m pytest_emguard.finetune train checks its cards
    text = str(info.value)
    assert "4 problem(s)" in text
    assert "at $: 'versions' is a required property; fix: add it" in text
    assert "at $.lora.rank" in text and "at $.stages[0].sha256: 'nope' is not a sha256" in text
    assert "'examples' is a required property" in text
    (tmp_path / "c.yaml").write_text("name: x\nlora: {rank: 0}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: at \$\.lora"):
        load_card(tmp_path / "c.yaml")


def test_a_warm_up_longer_than_a_stage_is_warned_about(
    tiny_qwen: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--domain", "risky_financial", "--base", str(tiny_qwen), "--out", "o", "--dry-run"]
    assert main([*args, "--max-steps=3", "--set", "warmup_steps=5"]) == 0
    assert (
        "  warning: the warm-up (5 steps) is at least as long as stage risky_financial (3 steps): the learning rate "
        "never reaches lr there" in capsys.readouterr().out
    )
    assert main([*args, "--max-steps=30", "--set", "warmup_steps=5"]) == 0
    assert "warning" not in capsys.readouterr().out
